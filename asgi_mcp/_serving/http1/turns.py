"""On Trio, the turns the built-in server's connections take between requests, handed out in order.

Each connection yields once per request, as it waits for the next one. With a plain yield, Trio
decides the order: its run loop takes the tasks made ready during one batch as the next batch and
runs it in the order they became ready or in the opposite order, at random (trio/_core/_run.py).
When the order flips, a connection served late in one round is served early in the next and the
other way round, so a request waits anything from nothing to two rounds: at 32 connections the
p99 was twice the mean (docs/performance.md, "Tail latency on Trio").

`Turns` keeps the connections that yield in a first-in-first-out queue (`TurnQueue`, no I/O) and
hands turns out in groups: a group is made ready at once, when the last task of the group before it
resumes, so each batch of the run loop holds at most one group, and Trio's coin can only reorder
the tasks within it. A request then waits one round, give or take a group. The price is one more
batch of the run loop per group, instead of one per round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

from trio.lowlevel import Abort, RaiseCancelT, Task, checkpoint, current_task, reschedule, wait_task_rescheduled

__all__ = ["TURN_GROUP", "TurnQueue", "Turns"]

# Connections per group: small enough that the order within one moves a request's wait little
# (at 32 connections, half a round: the p99 is about 1.5 times the median, where uvicorn's is 2),
# large enough that the extra batches cost little: groups of 8 took 3% more CPU a request than
# groups of 16 with McpApp (docs/performance.md, "Turns in groups of 16").
TURN_GROUP: Final = 16

T = TypeVar("T")


class TurnQueue(Generic[T]):
    """Who gets the next turns, first in, first out, in groups of at most `group`.

    Invariant: while anyone waits in the queue, a group is out (handed its turns, not all resumed
    yet), and the last of that group to resume hands out the next one. So nobody waits for good,
    and an arrival with no group out is a group of one at once.
    """

    __slots__ = ("_group", "_out", "_queue")

    def __init__(self, group: int = TURN_GROUP) -> None:
        if group < 1:
            raise ValueError("a group holds at least one turn")
        self._group = group
        self._queue: deque[T] = deque()
        self._out = 0  # turns handed out whose takers have not resumed yet

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def arrive(self, who: T) -> bool:
        """True: `who` has its turn now (a group of one); False: it waits in the queue."""
        if self._out == 0:
            self._out = 1
            return True
        self._queue.append(who)
        return False

    def leave(self, who: T) -> None:
        """`who` stops waiting before its turn (cancelled)."""
        self._queue.remove(who)

    def resumed(self, wake: Callable[[T], object]) -> None:
        """A taker of a turn has resumed; when it was the last of its group, `wake` the next group."""
        self._out -= 1
        queue = self._queue
        if self._out or not queue:
            return
        count = self._out = min(self._group, len(queue))
        for _ in range(count):
            wake(queue.popleft())


class Turns:
    """`TurnQueue` for the tasks of one Trio run: a task's `taker` is its yield, a cancellation point."""

    __slots__ = ("_queue",)

    def __init__(self, group: int = TURN_GROUP) -> None:
        self._queue: TurnQueue[Task] = TurnQueue(group)

    def taker(self) -> Callable[[], Awaitable[None]]:
        """The calling task's way to take its turns (call it from that task only): what a
        connection's stream holds, made once per connection rather than once per turn."""
        task = current_task()
        queue = self._queue

        def abort(_: RaiseCancelT) -> Abort:
            queue.leave(task)
            return Abort.SUCCEEDED

        async def take() -> None:
            if queue.arrive(task):
                try:
                    await checkpoint()
                finally:
                    queue.resumed(reschedule)
                return
            await wait_task_rescheduled(abort)
            queue.resumed(reschedule)

        return take
