"""Writing to an ASGI response from the task that runs the request, shared by both eras.

A handler writes its frames straight to its own response (`ResponseWriter`): no task, buffer or pump per
request, and a slow client slows only its own response. One app-wide `KeepAlive` ticker keeps silent
responses alive and abandons sends that make no progress. `wait_for_disconnect` is how a watcher learns
that the client left.
"""

from __future__ import annotations

import anyio
import anyio.abc

from .._core.asgi import ClientGone, Receive, Send
from .._core.sse import KEEPALIVE

__all__: list[str] = []


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


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body was already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
