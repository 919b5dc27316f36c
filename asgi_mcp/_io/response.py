"""Writing to an ASGI response from the task that runs the request, shared by both eras.

A handler writes its frames straight to its own response (`ResponseWriter`): no task, buffer or pump per
request, and a slow client slows only its own response. One app-wide `KeepAlive` ticker keeps silent
responses alive, sends the heads that no chunk took in time, and abandons sends that make no progress.
`wait_for_disconnect` is how a watcher learns that the client left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc

from .._core.asgi import ClientGone, Receive, Send
from .._core.response_states import TRANSITIONS as RESPONSES
from .._core.response_states import ResponseAction, ResponseInput, ResponseState
from .._core.sse import KEEPALIVE
from .loop import CancelScope, CancelScopeFactory

__all__: list[str] = []

# How long a response's head may wait for its first chunk (see `KeepAlive`): short enough that a
# client sees a slow call start at once; long enough for most answers to go out with their head.
HEAD_DELAY: Final = 0.05

# The table's states, inputs and actions as module globals: read on every response, and an enum
# member's attribute lookup on its class costs several times a global's.
_OPEN: Final = ResponseState.OPEN
_ENDED: Final = ResponseState.ENDED
_WRITE: Final = ResponseInput.WRITE
_STOP: Final = ResponseInput.STOP
_FINISH: Final = ResponseInput.FINISH
_FINAL_SENT: Final = ResponseInput.FINAL_SENT
_GONE: Final = ResponseInput.GONE
_SEND: Final = ResponseAction.SEND
_SEND_FINAL: Final = ResponseAction.SEND_FINAL


class ResponseWriter:
    """An SSE response written by the task that runs the request, in turns with the keep-alive ticker.

    The head goes out with the first chunk, in the same turn: a request answered at once costs one
    turn (and one write on most servers), and its response declares its length. The head of one
    that runs silent goes out alone within `HEAD_DELAY` (see `KeepAlive`).

    `write` never raises for a client that left: it returns False, and the handler runs on (in this
    era a disconnect is not a cancellation; its messages still reach the event store). `stop` (sync)
    refuses further frames; `end` completes the response once the current turn is over. A send that
    makes no progress for a whole keep-alive interval is abandoned (see `KeepAlive`): the writer runs
    shielded from the request's cancellation, so only this bounds a client that stopped reading,
    unless the server bounds every send itself (`server_bounds_sends`: the scope carries
    `SEND_TIMEOUT_EXTENSION`), which then fails the stalled send at its own timeout.
    Its lifecycle is the table in `_core.response_states`.
    """

    __slots__ = (
        "_cancel_scope",
        "_head",
        "_send",
        "_sending",
        "_turn",
        "busy",
        "head_turns",
        "quiet_ticks",
        "server_bounds_sends",
        "state",
        "watched",
        "wrote",
    )

    def __init__(
        self,
        send: Send,
        cancel_scope: CancelScopeFactory,
        headers: list[tuple[bytes, bytes]],
        *,
        server_bounds_sends: bool = False,
    ) -> None:
        self._send = send
        self._head: list[tuple[bytes, bytes]] | None = headers  # until the first send takes it
        self._cancel_scope = cancel_scope  # the loop's (see `_io.loop`)
        self._turn: anyio.Event | None = None  # made only when two writers meet
        self._sending: CancelScope | None = None
        self.busy = False
        self.state = _OPEN
        self.wrote = False  # a send completed since the keep-alive ticker last looked
        self.quiet_ticks = 0
        self.head_turns = 0  # the ticker's, while the head waits
        self.watched = False  # registered with a keep-alive ticker (`KeepAlive`), which may abandon a send
        self.server_bounds_sends = server_bounds_sends  # then a stalled send fails without the ticker

    @property
    def open(self) -> bool:
        """Whether it still takes frames."""
        return self.state is _OPEN

    @property
    def head_waits(self) -> bool:
        """Whether the head is still to go (no chunk was sent yet, and the response is open)."""
        return self._head is not None and self.state is _OPEN

    def _step(self, event: ResponseInput) -> ResponseAction:
        self.state, action = RESPONSES[self.state, event]
        return action

    async def write(self, body: bytes) -> bool:
        """Write one chunk; False once the response is stopped, ended or its client gone."""
        await self._take_turn()
        try:
            # Asked once the turn is ours: it may have been stopped or ended while we waited.
            if RESPONSES[self.state, _WRITE][1] is not _SEND:
                return False
            await self._put(body, more=True)
            return self.state is _OPEN
        finally:
            self._end_turn()

    async def send_head(self) -> None:
        """The head alone, for a handler silent for a while (see `KeepAlive`); none once it went."""
        await self._take_turn()
        try:
            if self.head_waits:
                await self._put(b"", more=True)
        finally:
            self._end_turn()

    def stop(self) -> None:
        self.state = RESPONSES[self.state, _STOP][0]

    def abandon_send(self) -> None:
        """The send in progress made no progress for a whole interval: the client stopped reading."""
        if self._sending is not None:
            self._sending.cancel()

    async def end(self, body: bytes = b"") -> None:
        """Stop and send the end of the body, `body` last (after any write in progress). Idempotent."""
        self.state, action = RESPONSES[self.state, _FINISH]
        if action is not _SEND_FINAL:
            return
        await self._take_turn()
        try:
            # Not when another `end`, or a failed send, got there first.
            if self.state is not _ENDED and await self._put(body, more=False):
                self.state = RESPONSES[self.state, _FINAL_SENT][0]
        finally:
            self._end_turn()

    async def _put(self, body: bytes, *, more: bool) -> bool:
        """Send one chunk; False when the client is gone (the response ended with it).

        While a keep-alive ticker watches the response (a legacy answer, its final frame included),
        the send runs in a scope of its own, which the ticker cancels if it stalls (`abandon_send`).
        A response no ticker watches (a modern one) gets no such scope, since nothing would cancel
        it, nor one whose server bounds its sends: on Trio a cancel scope costs more than the send.
        """
        if not self.watched or self.server_bounds_sends:
            sent = await self._send_chunk(body, more)
        else:
            sent = False
            scope = self._sending = self._cancel_scope()
            try:
                with scope:
                    sent = await self._send_chunk(body, more)
            finally:
                self._sending = None
        if not sent:
            self._step(_GONE)
            return False
        self.wrote = True
        return True

    async def _send_chunk(self, body: bytes, more: bool) -> bool:
        """The head first if it has not gone yet, then `body`; False when the client is gone. A
        response ended before any chunk went declares its length: one write on most servers, and
        the client sees a complete body."""
        head = self._head
        try:
            if head is not None:
                self._head = None
                if not more:
                    head = [*head, (b"content-length", b"%d" % len(body))]
                await self._send({"type": "http.response.start", "status": 200, "headers": head})
            # The head alone (`send_head`) is followed by an empty body too: a server may hold a head
            # until the first body message, as the ASGI spec asks (the built-in server does).
            if body or not more or head is not None:
                await self._send({"type": "http.response.body", "body": body, "more_body": more})
        except (ClientGone, OSError):
            return False
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

    A response's head waits for its first chunk, but not longer than `HEAD_DELAY`: while a
    registered response has not sent its head, the ticker also wakes every half `HEAD_DELAY`,
    and sends the head of one that has waited two of those turns (so at most `HEAD_DELAY`).
    An idle app wakes once a half interval, as before. A registration does not wake a napping
    ticker: it cuts the nap to half a `HEAD_DELAY`, which then counts as the first turn. Most
    answers go out with their head long before that; waking the ticker for each of them cost
    every request a cancellation, a task switch and a new cancel scope for the next nap.
    """

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self._clock = clock  # the loop's (`_io.loop`); the sleeps are the loop's own
        self._writers: set[ResponseWriter] = set()
        self._scope: anyio.CancelScope | None = None
        self._nap: anyio.CancelScope | None = None  # the ticker's wait while no head is waiting

    def register(self, writer: ResponseWriter) -> None:
        writer.watched = True
        self._writers.add(writer)
        nap = self._nap
        if nap is not None:  # a head now waits: the ticker takes the shorter turns, from the nap's end
            self._nap = None  # the cut nap bounds the wait of whoever registers during it, too
            nap.deadline = min(nap.deadline, anyio.current_time() + HEAD_DELAY / 2)  # the nap's own clock

    def unregister(self, writer: ResponseWriter) -> None:
        writer.watched = False
        self._writers.discard(writer)

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        half, clock = self.interval / 2, self._clock
        with anyio.CancelScope() as self._scope:
            next_tick = clock() + half
            while True:
                # Never negative (anyio refuses that): a busy loop may wake the ticker past its tick.
                until_tick = max(0.0, next_tick - clock())
                if any(writer.head_waits for writer in self._writers):
                    await anyio.sleep(min(HEAD_DELAY / 2, until_tick))
                else:
                    with anyio.move_on_after(until_tick) as self._nap:
                        await anyio.sleep_forever()
                    self._nap = None
                for writer in self._writers:
                    if writer.head_waits:
                        self._head_turn(writer, task_group)
                now = clock()
                if now >= next_tick:
                    next_tick = now + half  # a late tick is not made up for with a burst
                    for writer in self._writers:
                        self._tick(writer, task_group)

    def _head_turn(self, writer: ResponseWriter, task_group: anyio.abc.TaskGroup) -> None:
        writer.head_turns += 1
        if writer.head_turns == 2:
            task_group.start_soon(writer.send_head)  # its own task, as a comment is

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
