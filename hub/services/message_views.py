"""The views of messages the hub has read, kept by id and row version: a page reads only each row's id
and version, and builds the `Message` of those it has not seen (or that changed since).

Building the views was most of a page's cost: fetching every column of 50 rows, decoding their
JSON and timestamps and validating the models took about 300 µs of the 420 µs `messages.list`
spent in process, and a page is read many times (by each member, by agents polling the newest page). A
chat server keeps its recent messages for the same reason (Synapse's event cache).

The key is the row's `version`, which every change to a message bumps (`storage.queries.messages.
update_message`): an edit, a delete, an erased attachment. A view is never served for a version it
was not built from, so a stale view is never shown, on one node or several (each node keeps its own,
and the version comes from the store in the reader's own query). Views are shared by all readers:
a `Message` carries nothing that depends on who reads it, and which messages a reader may see is
decided by the query, not here.

Views are dropped least recently used first beyond `max_bytes` (an estimate: the model's fixed part,
the body, and the most metadata and attachments can hold).
"""

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Final

from protocol.common import MAX_METADATA_BYTES
from protocol.messages import Message

# Measured with tracemalloc: a `Message` of a short body without metadata holds about 1.4 KiB besides
# its body; metadata, when there is any, about as much again as its JSON (at most MAX_METADATA_BYTES).
_FIXED_BYTES: Final = 1536
_METADATA_BYTES: Final = 4 * MAX_METADATA_BYTES
_ATTACHMENT_BYTES: Final = 1024


def _weight(message: Message) -> int:
    weight = _FIXED_BYTES + sys.getsizeof(message.body) + _ATTACHMENT_BYTES * len(message.attachments)
    return weight + _METADATA_BYTES if message.metadata else weight


class MessageViews:
    """Views of messages by id, each with the row version it was built from, up to `max_bytes` (0: none kept).

    Thread-safe: on PostgreSQL pages are read in worker threads.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[int, Message, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        """Views served, since start."""
        self.misses = 0
        """Views asked for and not kept (or not of that version): built from their rows."""

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def get(self, versions: Sequence[tuple[str, int]]) -> list[Message | None]:
        """The view of each (message id, version) kept, None where there is none of that version."""
        found: list[Message | None] = []
        with self._lock:
            for message_id, version in versions:
                kept = self._kept.get(message_id)
                if kept is None or kept[0] != version:
                    found.append(None)
                else:
                    self._kept.move_to_end(message_id)
                    found.append(kept[1])
            hits = len(found) - found.count(None)
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def keep(self, views: Iterable[tuple[int, Message]]) -> None:
        """Keep each view with the row version it was built from (replacing older views of the same message)."""
        if not self._max_bytes:
            return
        weighed = [(version, message, _weight(message)) for version, message in views]
        with self._lock:
            for version, message, weight in weighed:
                if weight > self._max_bytes:
                    continue
                replaced = self._kept.pop(message.message_id, None)
                if replaced is not None:
                    self._bytes -= replaced[2]
                self._kept[message.message_id] = (version, message, weight)
                self._bytes += weight
            while self._bytes > self._max_bytes:
                _, (_, _, dropped) = self._kept.popitem(last=False)
                self._bytes -= dropped
