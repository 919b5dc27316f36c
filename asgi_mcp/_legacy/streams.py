"""The outbound streams of a legacy session, and how their messages reach an HTTP response.

A logical stream (a POST's answer stream, or the session's standalone stream) outlives any one HTTP
connection: the server may close the connection for polling (SEP-1699), the client may drop it, and a
later GET with `Last-Event-ID` attaches a new connection to the same stream. Messages go first to the
event store (when there is one) and then to whichever connection is attached; while the store is out of
reach they go out without an SSE id (`_ports.replay.EventLog`: resumability degrades, not the session):

- the POST that runs the request writes its frames straight to its own response (`ResponseWriter`);
- a GET (the standalone stream, or a reconnection to a request's stream) is fed through a small
  bounded buffer and `pump`, since the frames come from other tasks.

Each stream's lifecycle is the table in `_core.outbound`, the session's own in `_core.live_session`;
this module only executes what they decide.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._core.asgi import Send
from .._core.jsonrpc import dumps, written_answer
from .._core.live_session import TRANSITIONS as LIVE
from .._core.live_session import LiveAction, LiveInput, LiveState
from .._core.outbound import TRANSITIONS as STREAMS
from .._core.outbound import StreamAction, StreamInput, StreamState
from .._core.sse import KEEPALIVE, encode_event
from .._io.response import ResponseWriter
from .._ports.replay import EventLog

__all__: list[str] = []

# Per-connection buffer. Enough for bursts of progress and log messages; a client that stops
# reading holds back only its own stream's handler.
STREAM_BUFFER: Final = 16

# The tables' members read per request, as module globals: an enum member's attribute lookup on
# its class costs several times a global's.
_DELIVER: Final = StreamAction.DELIVER
_RELEASE: Final = StreamAction.RELEASE
_RECORD: Final = StreamAction.RECORD
_AWAITING: Final = StreamState.AWAITING
_FINAL: Final = StreamInput.FINAL
_MESSAGE: Final = StreamInput.MESSAGE
_LIVE_CLOSED: Final = LiveState.CLOSED
_LIVE_IDLE: Final = LiveState.IDLE
_EXCHANGE: Final = LiveInput.EXCHANGE
_REFUSE_GONE: Final = LiveAction.REFUSE_GONE
_DETACHED: Final = StreamState.DETACHED
_ATTACH: Final = StreamInput.ATTACH
_DETACH: Final = StreamInput.DETACH
_WRITE_TO: Final = StreamInput.WRITE_TO
_REFUSE: Final = StreamAction.REFUSE


class Frame(NamedTuple):
    event_id: str | None
    data: str  # JSON text; empty for a priming event
    final: bool
    retry_ms: int | None = None

    def encode(self) -> bytes:
        # A priming event (empty data) carries no event name, as the SDK's transport sends it.
        return encode_event(
            self.data, event="message" if self.data else None, event_id=self.event_id, retry_ms=self.retry_ms
        )


Connection = ResponseWriter | MemoryObjectSendStream[Frame]


class OutboundStream:
    """One logical stream; at most one HTTP connection is attached at a time (see `_core.outbound`)."""

    __slots__ = ("answer", "consumer", "state", "store_id", "writer")

    def __init__(self, store_id: str, *, json_only: bool = False) -> None:
        self.store_id = store_id
        self.state = _AWAITING if json_only else _DETACHED
        self.consumer: MemoryObjectSendStream[Frame] | None = None
        self.writer: ResponseWriter | None = None
        # A JSON exchange's answer (its JSON, encoded), kept here for the request that runs it: no
        # connection to feed.
        self.answer: bytes | None = None

    def step(self, event: StreamInput) -> StreamAction:
        self.state, action = STREAMS[self.state, event]
        return action

    def attach(self) -> tuple[MemoryObjectSendStream[Frame], MemoryObjectReceiveStream[Frame]] | None:
        """Attach a GET's connection, replacing any other; None when the stream ended (replay only)."""
        action = self.step(_ATTACH)
        if action is _REFUSE:
            return None
        if action is _RELEASE:
            self._release()
        send, receive = anyio.create_memory_object_stream[Frame](STREAM_BUFFER)
        self.consumer = send
        return send, receive

    def write_to(self, writer: ResponseWriter) -> None:
        """Deliver frames straight to the response of the POST that runs the request."""
        self.state = STREAMS[self.state, _WRITE_TO][0]
        self.writer = writer

    def detach(self, connection: Connection | None = None) -> None:
        """Stop feeding `connection` (None: whichever is attached). Frames already queued are still
        delivered: closing the buffer lets the pump drain them before it sees the end of the stream.
        A POST's own response is only stopped: its task ends it once the handler returns."""
        if connection is not None and connection is not self.writer and connection is not self.consumer:
            return  # replaced meanwhile: the newer connection stays
        if self.step(_DETACH) is _RELEASE:
            self._release()

    def close(self) -> None:
        """The session ended: let go of the connection, for good."""
        if self.step(StreamInput.CLOSE) is _RELEASE:
            self._release()

    async def close_connection(self) -> None:
        """End the attached connection now (SEP-1699 polling); the stream goes on in the event store."""
        writer = self.writer
        self.detach()
        if writer is not None:
            await writer.end()

    async def deliver(self, frame: Frame) -> None:
        writer = self.writer
        if writer is not None:
            if frame.final:
                # The answer is the last thing its POST's response carries: it goes out with the end
                # of the body, in one send (the POST's own `end` then finds the response ended).
                await writer.end(frame.encode())
            elif await writer.write(frame.encode()):
                return
            if self.writer is writer:
                self._lost()
            return
        consumer = self.consumer
        if consumer is None:
            return
        try:
            await consumer.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The connection went away (or was replaced) while we waited for buffer space.
            if self.consumer is consumer:
                self._lost()
            return
        if frame.final and self.consumer is consumer:
            self._lost()

    def _lost(self) -> None:
        """The attached connection is done (its final frame went out, or it failed)."""
        self.state, action = STREAMS[self.state, StreamInput.LOST]
        writer, consumer = self.writer, self.consumer
        self.writer = self.consumer = None
        if action is _RELEASE:  # (not `_release`: this runs once per answered request)
            if writer is not None:
                writer.stop()
            if consumer is not None:
                consumer.close()

    def _release(self) -> None:
        writer, consumer = self.writer, self.consumer
        self.writer = self.consumer = None
        if writer is not None:
            writer.stop()
        if consumer is not None:
            consumer.close()


class SessionStreams:
    """The outbound side of one session: its standalone stream, its requests' streams, and its own
    state (see `_core.live_session`). The dispatcher emits here; nothing here calls back up."""

    __slots__ = ("_events", "_opened", "by_id", "elsewhere", "standalone", "state", "tag")

    def __init__(self, events: EventLog | None, tag: str | None = None) -> None:
        self._events = events
        # An adopted session keeps the tag it was opened with: its stored events stay its own.
        self.tag = tag or EventLog.new_tag()
        self.standalone = OutboundStream(f"{self.tag}/get")
        self.by_id: dict[str, OutboundStream] = {}
        self._opened = 0
        self.state = LiveState.IDLE
        # In a fleet: where a standalone message goes when no GET listens here (another worker's may).
        self.elsewhere: Callable[[str | None, str], Awaitable[None]] | None = None

    def step(self, event: LiveInput) -> LiveAction:
        self.state, action = LIVE[self.state, event]
        return action

    def admit_exchange(self) -> bool:
        """A request arrives for the session: False once the session has ended."""
        return self.step(_EXCHANGE) is not _REFUSE_GONE

    def new_stream(self, *, json_only: bool) -> OutboundStream:
        if json_only:
            # Carries only its answer, to the request that runs it: nothing to store, replay or
            # reconnect to, so it needs no id and no place among the session's streams.
            return OutboundStream("", json_only=True)
        # Stream ids name events in the store: unguessable then; without a store a counter will do.
        if self._events is not None:
            suffix = secrets.token_urlsafe(6)
        else:
            self._opened += 1
            suffix = str(self._opened)
        stream = OutboundStream(f"{self.tag}/{suffix}")
        self.by_id[stream.store_id] = stream
        return stream

    def record_answer(self, stream: OutboundStream, message: dict[str, Any]) -> bool:
        """A request's answer on a JSON answer's stream, kept for the request that ran it (it answers
        inline, once the handler returns): no await. False for any other stream (see `emit`)."""
        if stream.state is not _AWAITING:
            return False
        stream.state, action = STREAMS[_AWAITING, _FINAL]
        if action is _RECORD:
            stream.answer = written_answer(message)[1]
        return True

    async def emit(self, stream: OutboundStream, message: dict[str, Any], *, final: bool = False) -> None:
        """Send one message on `stream`: stored first (for replay), then delivered if a client is attached
        (without an id when it could not be stored)."""
        event = _FINAL if final else _MESSAGE
        if stream.state is _AWAITING:
            # A JSON answer carries nothing but its answer (`record_answer`): the rest has nowhere to go.
            if final:
                self.record_answer(stream, message)
            else:
                stream.step(event)
            return
        if final:
            message, body = written_answer(message)  # what cannot be written: an internal error, stored as sent
            data = body.decode()
        else:
            data = dumps(message)
        event_id = None
        if self._events is not None and self.state is not _LIVE_CLOSED:
            if final:
                # Stored even when its request is being cancelled from outside (a server cancelling
                # on a dropped connection): the client that resumes the stream must find its answer.
                with anyio.CancelScope(shield=True):
                    event_id = await self._events.store(stream.store_id, message, data)
            else:
                event_id = await self._events.store(stream.store_id, message, data)
        if stream is self.standalone and self.elsewhere is not None and self.state is _LIVE_IDLE:
            await self.elsewhere(event_id, data)  # no GET here: the worker holding one delivers it
            return
        # Stepped once stored: a reconnection meanwhile attaches, and gets the frame live.
        stream.state, action = STREAMS[stream.state, event]
        try:
            if action is _DELIVER:
                await stream.deliver(Frame(event_id, data, final))
        finally:
            # Forgotten only once delivered: a session closing while the final frame waits (its
            # send is a checkpoint) must still find the stream and end its connection.
            if final:
                self.by_id.pop(stream.store_id, None)

    async def deliver_standalone(self, event_id: str | None, data: str) -> None:
        """A standalone message another worker emitted (and stored): to the GET listening here, if any."""
        if self.state is not LiveState.LISTENING:
            return
        stream = self.standalone
        stream.state, action = STREAMS[stream.state, StreamInput.MESSAGE]
        if action is _DELIVER:
            await stream.deliver(Frame(event_id, data, False))

    def close(self) -> None:
        """End every stream (the session's `TEAR_DOWN`); their events are forgotten."""
        self.standalone.close()
        for stream in self.by_id.values():
            stream.close()
        self.by_id.clear()
        if self._events is not None:
            self._events.forget(self.tag)


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
            await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
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
