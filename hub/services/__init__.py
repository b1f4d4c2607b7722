"""The services: each owns the rules of one part of the domain."""

from dataclasses import dataclass

from .agents import AgentService
from .blocks import BlockService
from .conversations import ConversationService
from .events import EventService
from .identity import IdentityService
from .messages import MessageService


@dataclass(frozen=True)
class Services:
    """What an operation handler may use: the services, nothing else (no store, no transport)."""

    identity: IdentityService
    agents: AgentService
    conversations: ConversationService
    messages: MessageService
    blocks: BlockService
    events: EventService
