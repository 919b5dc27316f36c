"""`LateWatch`: an exchange gets a watcher only once it has lasted a whole period, never before."""

from __future__ import annotations

import anyio
import pytest

from asgi_mcp._io.watch import LateWatch
from tests.kit.polling import let_time_pass, wait_until

pytestmark = pytest.mark.anyio

PERIOD = 0.02


class Exchange:
    def __init__(self) -> None:
        self.watch_ticks = 0
        self.watched = 0

    async def watch(self) -> None:
        self.watched += 1


async def test_an_exchange_is_watched_at_its_second_tick_and_only_once() -> None:
    watch = LateWatch(PERIOD)
    exchange = Exchange()
    async with anyio.create_task_group() as tg:
        watch.add(exchange)
        watch.tick(tg)  # may come right after it arrived: not yet a whole period
        await anyio.wait_all_tasks_blocked()
        assert exchange.watched == 0
        watch.tick(tg)
        await anyio.wait_all_tasks_blocked()
        assert exchange.watched == 1
        watch.tick(tg)
        watch.tick(tg)
    assert exchange.watched == 1


async def test_an_exchange_that_ends_between_two_ticks_is_never_watched() -> None:
    watch = LateWatch(PERIOD)
    quick, late = Exchange(), Exchange()
    async with anyio.create_task_group() as tg:
        watch.add(late)
        watch.add(quick)
        watch.tick(tg)
        watch.discard(quick)
        watch.tick(tg)
    assert (quick.watched, late.watched) == (0, 1)


async def test_the_ticker_watches_what_lasts_again_after_idling() -> None:
    watch = LateWatch(PERIOD)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        first = Exchange()
        watch.add(first)
        await wait_until(lambda: first.watched == 1)
        watch.discard(first)
        await let_time_pass(3 * PERIOD)  # nothing to watch: the ticker waits for the next arrival
        second = Exchange()
        watch.add(second)
        await wait_until(lambda: second.watched == 1)
        watch.stop()


class Lasting(Exchange):
    async def watch(self) -> None:
        self.watched += 1
        await anyio.sleep_forever()


async def test_stopping_the_watch_ends_its_watchers() -> None:
    watch = LateWatch(PERIOD)
    exchange = Lasting()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            watch.add(exchange)
            await wait_until(lambda: exchange.watched == 1)
            watch.stop()  # the task group exits only once the ticker and the watcher have ended
