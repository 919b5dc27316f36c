"""Outbound SSE streams of a legacy session and the pump that writes one to an HTTP response.

A logical stream (a POST's response stream, or the session's standalone stream) outlives any one
HTTP connection: the server may close the connection for polling (SEP-1699), the client may drop
it, and a later GET with `Last-Event-ID` attaches a new connection to the same stream. Messages go
first to the event store (when there is one) and then to whichever connection is attached, through
a small bounded buffer so a slow client slows only its own stream.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._asgi import Receive, Send
from ._sse import KEEPALIVE, encode_event

__all__: list[str] = []

# Per-connection buffer. Enough for bursts of progress and log messages; a client that stops
# reading holds back only its own stream's handler.
STREAM_BUFFER: Final = 16


class Frame(NamedTuple):
    event_id: str | None
    data: str  # JSON text; empty for a priming event
    final: bool
    retry_ms: int | None = None


class OutboundStream:
    """One logical stream; at most one HTTP connection is attached at a time."""

    __slots__ = ("answer", "consumer", "finished", "json_only", "store_id")

    def __init__(self, store_id: str, *, json_only: bool = False) -> None:
        self.store_id = store_id
        self.consumer: MemoryObjectSendStream[Frame] | None = None
        self.finished = False
        # JSON-response exchanges carry only the final answer; request-scoped notifications are dropped.
        self.json_only = json_only
        # A JSON exchange's answer, kept here for the request that runs it: no connection to feed.
        self.answer: Frame | None = None

    def attach(self) -> MemoryObjectReceiveStream[Frame]:
        """Attach a new connection, replacing any previous one (a reconnecting client left it)."""
        self.detach()
        send, receive = anyio.create_memory_object_stream[Frame](STREAM_BUFFER)
        self.consumer = send
        return receive

    def detach(self, consumer: MemoryObjectSendStream[Frame] | None = None) -> None:
        """Stop feeding the attached connection. Frames already queued are still delivered to it:
        closing the send side lets the pump drain them before it sees the end of the stream."""
        current = self.consumer
        if current is not None and (consumer is None or consumer is current):
            self.consumer = None
            current.close()

    async def deliver(self, frame: Frame) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        try:
            await consumer.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The connection went away (or was replaced) while we waited for buffer space.
            self.detach(consumer)
            return
        if frame.final:
            self.detach(consumer)


async def pump(
    frames: MemoryObjectReceiveStream[Frame],
    send: Send,
    *,
    keepalive: float,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Write frames as SSE events until the final one or until the stream is detached.

    Keep-alive comments go out when nothing was sent for `keepalive` seconds, so proxies with idle
    read timeouts keep long streams open. A send that fails means the client left: `OSError` is
    how ASGI 2.4 servers say so, and it simply ends the pump.
    """
    async with frames:
        while True:
            frame = await _next_frame(frames, keepalive)
            if frame is _END:
                break
            if frame is None:
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                continue
            if frame.event_id is not None and frame.event_id in skip:
                continue  # already replayed to this connection
            # A priming event (empty data) carries no event name, as the SDK's transport sends it.
            body = encode_event(
                frame.data, event="message" if frame.data else None, event_id=frame.event_id, retry_ms=frame.retry_ms
            )
            await send({"type": "http.response.body", "body": body, "more_body": True})
            if frame.final:
                break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


_END: Final = Frame(None, "", True)


async def _next_frame(frames: MemoryObjectReceiveStream[Frame], keepalive: float) -> Frame | None:
    """The next frame; None after `keepalive` seconds of silence; `_END` once the stream is detached.

    The non-blocking read first keeps the busy path free of a cancel scope per event.
    """
    try:
        return frames.receive_nowait()
    except anyio.WouldBlock:
        pass
    except anyio.EndOfStream:
        return _END
    with anyio.move_on_after(keepalive):
        try:
            return await frames.receive()
        except anyio.EndOfStream:
            return _END
    return None


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body was already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
