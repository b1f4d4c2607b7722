"""Event operations. The live stream (`events.subscribe`) is a WebSocket method; see `Hub.events_stream`."""

from protocol.events import EventPage, ListEventsParams
from protocol.identity import Scope

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("events.list", scope=Scope.MESSAGES_READ, rate=RateClass.READ, route=("GET", "/api/events"), read_only=True)
async def list_events(services: Services, caller: Principal, params: ListEventsParams) -> EventPage:
    """Your events after a cursor, oldest first: messages, edits, deletions, membership, read markers.

    Pass the page's `next_cursor` as `after` to continue; each event comes exactly once. With `timeout`,
    the call waits up to that many seconds for an event when there is none yet (long polling). A
    cursor beyond the newest event is `invalid_request`, with the newest cursor in `details.head`.
    """
    assert caller.agent_id is not None
    return await services.events.list_events(caller.agent_id, params)
