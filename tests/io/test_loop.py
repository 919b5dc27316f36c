"""The running loop's services (`_io/loop.py`): resolved once, they agree with anyio's helpers."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

from asgi_mcp._io.loop import Loop


@pytest.mark.anyio
async def test_the_clock_is_the_loops_own() -> None:
    clock = Loop.current().clock
    before = anyio.current_time()
    read = clock()
    after = anyio.current_time()
    assert before <= read <= after
    await anyio.lowlevel.checkpoint()
    assert clock() >= read


def test_on_trio_the_clock_is_the_runs_clock_a_mock_one_too() -> None:
    async def main() -> tuple[float, float]:
        clock = Loop.current().clock
        start = clock()
        await trio.sleep(3600)  # no time passes: the mock clock jumps
        return start, clock()

    start, end = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert end - start == 3600
