"""The services: each owns the rules of one part of the domain."""

from dataclasses import dataclass

from .agents import AgentService
from .identity import IdentityService


@dataclass(frozen=True)
class Services:
    """What an operation handler may use: the services, nothing else (no store, no transport)."""

    identity: IdentityService
    agents: AgentService
