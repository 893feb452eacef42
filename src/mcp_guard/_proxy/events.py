"""The HTTP front's event store: what lets a client that lost an SSE stream resume it with ``Last-Event-ID``.

The SDK's streamable-HTTP server numbers every message it sends on a stream by the id this store gives it, and
on a ``GET`` carrying ``Last-Event-ID`` replays the same stream's later messages. In memory, bounded: the oldest
events are forgotten first (a client that comes back after that many messages gets no replay, as from a server
without a store). Ids are random: one session cannot name another's events.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

#: Events kept, over all sessions.
DEFAULT_EVENTS = 10_000


class MemoryEventStore(EventStore):
    """The last ``limit`` events of every stream, in the order sent."""

    def __init__(self, limit: int = DEFAULT_EVENTS) -> None:
        self.limit = limit
        self._events: OrderedDict[EventId, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = uuid.uuid4().hex
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self.limit:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        known = self._events.get(last_event_id)
        if known is None:
            return None
        stream = known[0]
        after = False
        for event_id, (stream_id, message) in list(self._events.items()):
            if after and stream_id == stream and message is not None:  # None: a priming event, nothing to send
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


__all__ = ["DEFAULT_EVENTS", "MemoryEventStore"]
