"""Writing to an ASGI response from the task that runs the request, shared by both eras.

A handler writes its frames straight to its own response (`ResponseWriter`): no task, buffer or pump per
request, and a slow client slows only its own response. One app-wide `KeepAlive` ticker keeps silent
responses alive and abandons sends that make no progress. `wait_for_disconnect` is how a watcher learns
that the client left.
"""

from __future__ import annotations

from typing import Final

import anyio
import anyio.abc

from .._core.asgi import ClientGone, Receive, Send
from .._core.response_states import TRANSITIONS as RESPONSES
from .._core.response_states import ResponseAction, ResponseInput, ResponseState
from .._core.sse import KEEPALIVE

__all__: list[str] = []

_OPEN: Final = ResponseState.OPEN
_ENDED: Final = ResponseState.ENDED


class ResponseWriter:
    """An SSE response written by the task that runs the request, in turns with the keep-alive ticker.

    `write` never raises for a client that left: it returns False, and the handler runs on (in this
    era a disconnect is not a cancellation; its messages still reach the event store). `stop` (sync)
    refuses further frames; `end` completes the response once the current turn is over. A send that
    makes no progress for a whole keep-alive interval is abandoned (see `KeepAlive`): the writer runs
    shielded from the request's cancellation, so only this bounds a client that stopped reading.
    Its lifecycle is the table in `_core.response_states`.
    """

    __slots__ = ("_backend", "_send", "_sending", "_turn", "busy", "quiet_ticks", "state", "wrote")

    def __init__(self, send: Send, backend: type[anyio.abc.AsyncBackend]) -> None:
        self._send = send
        self._backend = backend  # resolved once per app: `anyio.CancelScope()` looks it up per call
        self._turn: anyio.Event | None = None  # made only when two writers meet
        self._sending: anyio.CancelScope | None = None
        self.busy = False
        self.state = ResponseState.OPEN
        self.wrote = False  # a send completed since the keep-alive ticker last looked
        self.quiet_ticks = 0

    @property
    def open(self) -> bool:
        """Whether it still takes frames."""
        return self.state is _OPEN

    def _step(self, event: ResponseInput) -> ResponseAction:
        self.state, action = RESPONSES[self.state, event]
        return action

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
            # Asked once the turn is ours: it may have been stopped or ended while we waited.
            if RESPONSES[self.state, ResponseInput.WRITE][1] is not ResponseAction.SEND:
                return False
            await self._put({"type": "http.response.body", "body": body, "more_body": True})
            return self.state is _OPEN
        finally:
            self._end_turn()

    def stop(self) -> None:
        self.state = RESPONSES[self.state, ResponseInput.STOP][0]

    def abandon_send(self) -> None:
        """The send in progress made no progress for a whole interval: the client stopped reading."""
        if self._sending is not None:
            self._sending.cancel()

    async def end(self, body: bytes = b"") -> None:
        """Stop and send the end of the body, `body` last (after any write in progress). Idempotent."""
        self.state, action = RESPONSES[self.state, ResponseInput.FINISH]
        if action is not ResponseAction.SEND_FINAL:
            return
        await self._take_turn()
        try:
            # Not when another `end`, or a failed send, got there first.
            final: dict[str, object] = {"type": "http.response.body", "body": body, "more_body": False}
            if self.state is not _ENDED and await self._put(final):
                self.state = RESPONSES[self.state, ResponseInput.FINAL_SENT][0]
        finally:
            self._end_turn()

    async def _put(self, message: dict[str, object]) -> bool:
        """Send one message; False when the client is gone (the response ended with it)."""
        scope = self._sending = self._backend.create_cancel_scope()
        try:
            with scope:
                await self._send(message)
        except (ClientGone, OSError):
            scope.cancel()
        finally:
            self._sending = None
        if scope.cancel_called:
            self._step(ResponseInput.GONE)
            return False
        self.wrote = True
        return True

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
