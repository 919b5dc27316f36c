"""Outbound SSE streams of a legacy session, and the two ways one reaches an HTTP response.

A logical stream (a POST's response stream, or the session's standalone stream) outlives any one
HTTP connection: the server may close the connection for polling (SEP-1699), the client may drop
it, and a later GET with `Last-Event-ID` attaches a new connection to the same stream. Messages go
first to the event store (when there is one) and then to whichever connection is attached:

- the POST that runs the request writes its frames straight to its own response (`ResponseWriter`):
  no task, buffer or pump per request; one app-wide `KeepAlive` ticker keeps silent ones alive;
- a GET (the standalone stream, or a reconnection to a request's stream) is fed through a small
  bounded buffer and `pump`, since the frames come from other tasks.

Either way a slow client slows only its own stream.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._core.asgi import ClientGone, Receive, Send
from .._core.sse import KEEPALIVE, encode_event

__all__: list[str] = []

# Per-connection buffer. Enough for bursts of progress and log messages; a client that stops
# reading holds back only its own stream's handler.
STREAM_BUFFER: Final = 16


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


class ResponseWriter:
    """An SSE response written by the task that runs the request, in turns with the keep-alive ticker.

    `write` never raises for a client that left: it returns False, and the handler runs on (in this
    era a disconnect is not a cancellation; its messages still reach the event store). `stop` (sync)
    refuses further frames; `end` completes the response once the current turn is over. A send that
    makes no progress for a whole keep-alive interval is abandoned (see `KeepAlive`): the writer runs
    shielded from the request's cancellation, so only this bounds a client that stopped reading.
    """

    __slots__ = ("_backend", "_send", "_sending", "_turn", "busy", "ended", "open", "quiet_ticks", "wrote")

    def __init__(self, send: Send, backend: type[anyio.abc.AsyncBackend]) -> None:
        self._send = send
        self._backend = backend  # resolved once per app: `anyio.CancelScope()` looks it up per call
        self._turn: anyio.Event | None = None  # made only when two writers meet
        self._sending: anyio.CancelScope | None = None
        self.busy = False
        self.open = True  # accepts frames
        self.ended = False  # the final (empty) body was sent, or the client left
        self.wrote = False  # a send completed since the keep-alive ticker last looked
        self.quiet_ticks = 0

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        await self._take_turn()
        try:
            await self._put({"type": "http.response.start", "status": 200, "headers": headers})
        finally:
            self._end_turn()

    async def write(self, body: bytes) -> bool:
        """Write one chunk; False once the response is stopped, ended or its client gone."""
        await self._take_turn()
        try:
            if not self.open:  # stopped, ended or gone, perhaps while waiting for the turn
                return False
            await self._put({"type": "http.response.body", "body": body, "more_body": True})
            return self.open
        finally:
            self._end_turn()

    def stop(self) -> None:
        self.open = False

    def abandon_send(self) -> None:
        """The send in progress made no progress for a whole interval: the client stopped reading."""
        if self._sending is not None:
            self._sending.cancel()

    async def end(self, body: bytes = b"") -> None:
        """Stop and send the end of the body, `body` last (after any write in progress). Idempotent."""
        self.open = False
        if self.ended:
            return
        await self._take_turn()
        try:
            if not self.ended:
                await self._put({"type": "http.response.body", "body": body, "more_body": False})
                self.ended = True
        finally:
            self._end_turn()

    async def _put(self, message: dict[str, object]) -> None:
        scope = self._sending = self._backend.create_cancel_scope()
        try:
            with scope:
                await self._send(message)
        except (ClientGone, OSError):
            scope.cancel()
        finally:
            self._sending = None
        if scope.cancel_called:
            self.open = False
            self.ended = True
        else:
            self.wrote = True

    async def _take_turn(self) -> None:
        while self.busy:
            if self._turn is None:
                self._turn = anyio.Event()
            await self._turn.wait()
        self.busy = True

    def _end_turn(self) -> None:
        self.busy = False
        if self._turn is not None:
            self._turn.set()
            self._turn = None


class KeepAlive:
    """One ticker for every `ResponseWriter` of the app, instead of a timer per response.

    A response with no completed send during a tick gets a comment line; ticks come every half
    interval, so no response stays silent much longer than `interval`, and a busy response costs
    a flag. A send stuck for three ticks (at least a whole interval) is abandoned.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._writers: set[ResponseWriter] = set()
        self._scope: anyio.CancelScope | None = None

    def register(self, writer: ResponseWriter) -> None:
        self._writers.add(writer)

    def unregister(self, writer: ResponseWriter) -> None:
        self._writers.discard(writer)

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        with anyio.CancelScope() as self._scope:
            while True:
                await anyio.sleep(self.interval / 2)
                for writer in self._writers:
                    self._tick(writer, task_group)

    def _tick(self, writer: ResponseWriter, task_group: anyio.abc.TaskGroup) -> None:
        if writer.wrote:
            writer.wrote = False
            writer.quiet_ticks = 0
            return
        writer.quiet_ticks += 1
        if writer.busy:
            if writer.quiet_ticks >= 3:
                writer.abandon_send()
        elif writer.open:
            # Its own task: a client that stopped reading stalls only its own response.
            task_group.start_soon(writer.write, KEEPALIVE)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class OutboundStream:
    """One logical stream; at most one HTTP connection is attached at a time."""

    __slots__ = ("answer", "consumer", "finished", "json_only", "store_id", "writer")

    def __init__(self, store_id: str, *, json_only: bool = False) -> None:
        self.store_id = store_id
        self.consumer: MemoryObjectSendStream[Frame] | None = None
        self.writer: ResponseWriter | None = None
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

    def write_to(self, writer: ResponseWriter) -> None:
        """Deliver frames straight to the response of the POST that runs the request."""
        self.detach()
        self.writer = writer

    def detach(self, consumer: MemoryObjectSendStream[Frame] | None = None) -> None:
        """Stop feeding the attached connection. Frames already queued are still delivered to it:
        closing the send side lets the pump drain them before it sees the end of the stream. A
        POST's own response is only stopped: its task ends it once the handler returns."""
        if self.writer is not None and consumer is None:
            self.writer.stop()
            self.writer = None
        current = self.consumer
        if current is not None and (consumer is None or consumer is current):
            self.consumer = None
            current.close()

    async def close_connection(self) -> None:
        """End the attached connection now (SEP-1699 polling); the stream goes on in the event store."""
        writer = self.writer
        self.detach()
        if writer is not None:
            await writer.end()

    async def deliver(self, frame: Frame) -> None:
        writer = self.writer
        if writer is not None:
            delivered = await writer.write(frame.encode())
            if (frame.final or not delivered) and self.writer is writer:
                self.writer = None
            return
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


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body was already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
