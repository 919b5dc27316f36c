"""The order of the built-in server's connections' turns on Trio (`turns.py`): the queue without I/O,
as a state machine against a model, then `Turns` on Trio's run loop (Trio only: on asyncio the
loop runs ready callbacks first in, first out, and the server yields plainly)."""

from __future__ import annotations

import itertools
from collections import deque
from typing import TypeVar

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from asgi_mcp._serving.http1.turns import TurnQueue, Turns

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


# -- the queue ----------------------------------------------------------------------------------------


def resumed(queue: TurnQueue[T]) -> list[T]:
    """Who the queue wakes as one taker resumes."""
    woken: list[T] = []
    queue.resumed(woken.append)
    return woken


def test_turns_go_first_in_first_out_in_groups() -> None:
    queue: TurnQueue[str] = TurnQueue(group=2)
    assert queue.arrive("lone")  # nobody out: a group of one at once
    assert not any(queue.arrive(who) for who in "abcde")
    assert resumed(queue) == ["a", "b"]  # the lone one resumed: the next group
    assert resumed(queue) == []  # "a" resumed, "b" has not
    assert resumed(queue) == ["c", "d"]
    queue.leave("e")  # cancelled while waiting
    assert resumed(queue) == []
    assert resumed(queue) == []  # the last of the group resumed, nobody waits
    assert queue.arrive("f")  # so the next arrival goes at once again


def test_a_group_holds_at_least_one_turn() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TurnQueue(group=0)


class TurnQueueMachine(RuleBasedStateMachine):
    """Arrivals, resumptions and cancellations in any order: nobody waits for good, turns go in
    arrival order, no group is larger than asked."""

    def __init__(self) -> None:
        super().__init__()
        self.group = 3
        self.queue: TurnQueue[int] = TurnQueue(self.group)
        self.waiting: deque[int] = deque()  # the model: who waits, in arrival order
        self.out: list[int] = []  # handed a turn, not resumed yet
        self.next_id = 0

    @rule()
    def arrive(self) -> None:
        who, self.next_id = self.next_id, self.next_id + 1
        if self.queue.arrive(who):
            assert not self.out
            assert not self.waiting
            self.out.append(who)
        else:
            self.waiting.append(who)

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        self.out.remove(data.draw(st.sampled_from(self.out)))
        handed = resumed(self.queue)
        if self.out or not self.waiting:
            assert handed == []
        else:
            expected = [self.waiting.popleft() for _ in range(min(self.group, len(self.waiting)))]
            assert handed == expected
            self.out.extend(handed)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from(list(self.waiting)))
        self.queue.leave(who)
        self.waiting.remove(who)

    @invariant()
    def someone_out_while_anyone_waits(self) -> None:
        assert self.queue.waiting == len(self.waiting)
        assert not self.waiting or self.out


TestTurnQueue = TurnQueueMachine.TestCase
TestTurnQueue.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


# -- on Trio's run loop -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_task_takes_its_turn_once_a_round_in_the_same_place() -> None:
    """16 tasks taking turns in a loop: between two turns of one task the 15 others take theirs,
    give or take the group (Trio's own order would move a task anywhere from 1 to 31 turns)."""
    tasks, group, rounds = 16, 4, 30
    turns = Turns(group)
    order: list[int] = []

    async def loop(who: int) -> None:
        take = turns.taker()
        for _ in range(rounds):
            await take()
            order.append(who)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for who in range(tasks):
                tg.start_soon(loop, who)
    assert len(order) == tasks * rounds
    settled = order[3 * tasks : -tasks]  # after the start, before the first ones finish
    for who in range(tasks):
        places = [i for i, taker in enumerate(settled) if taker == who]
        gaps = {b - a for a, b in itertools.pairwise(places)}
        assert gaps <= set(range(tasks - group + 1, tasks + group)), (who, sorted(gaps))


@pytest.mark.anyio
async def test_a_task_cancelled_while_waiting_leaves_the_others_their_turns() -> None:
    turns = Turns(group=2)
    done: list[int] = []

    async def taker(who: int, cancel_at: int | None) -> None:
        take = turns.taker()
        for round_no in range(20):
            if round_no == cancel_at:
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await take()  # cancelled: queued or not, it raises and is gone
                continue
            await take()
        done.append(who)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for who in range(9):
                tg.start_soon(taker, who, who if who % 2 else None)
    assert sorted(done) == list(range(9))


@pytest.mark.anyio
async def test_a_lone_task_goes_at_once_and_its_turn_is_a_cancellation_point() -> None:
    take = Turns().taker()
    with anyio.fail_after(10):
        await take()
        await take()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await take()
        assert scope.cancelled_caught
        await take()  # the cancelled turn was given back: the next one goes at once too
