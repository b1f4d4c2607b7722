"""The services: each owns the rules of one part of the domain."""

from dataclasses import dataclass

from .agents import AgentService
from .blocks import BlockService
from .conversations import ConversationService
from .documents import DocumentService
from .events import EventService
from .files import FileService
from .identity import IdentityService
from .memories import MemoryService
from .messages import MessageService
from .schedules import ScheduleService
from .usage import UsageService
from .webhooks import WebhookService
from .workflows import WorkflowService


@dataclass(frozen=True)
class Services:
    """What an operation handler may use: the services, nothing else (no store, no transport)."""

    identity: IdentityService
    agents: AgentService
    conversations: ConversationService
    messages: MessageService
    blocks: BlockService
    events: EventService
    memories: MemoryService
    files: FileService
    documents: DocumentService
    workflows: WorkflowService
    webhooks: WebhookService
    usage: UsageService
    schedules: ScheduleService
