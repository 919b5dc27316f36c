"""`ResponseWriter` and `KeepAlive` through the ASGI messages they send: where the head goes, and a
ticker that keeps its word when the loop is too busy to wake it on time."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asgi_mcp._core.sse import SSE_HEADERS
from asgi_mcp._io import response
from asgi_mcp._io.loop import Loop
from asgi_mcp._io.response import KeepAlive, ResponseWriter
from tests.kit.polling import wait_until

pytestmark = pytest.mark.anyio


class Wire:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    def writer(self) -> ResponseWriter:
        return ResponseWriter(self.send, Loop.current().cancel_scope, SSE_HEADERS)

    @property
    def head(self) -> dict[bytes, bytes]:
        assert self.sent[0]["type"] == "http.response.start"
        return dict(self.sent[0]["headers"])

    @property
    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.sent if m["type"] == "http.response.body"]


@asynccontextmanager
async def ticking(interval: float, clock: Callable[[], float] | None = None) -> AsyncIterator[KeepAlive]:
    keepalive = KeepAlive(interval, clock or Loop.current().clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(keepalive.run, tg)
        yield keepalive
        keepalive.stop()


async def test_an_answer_ready_at_once_goes_with_its_head_and_its_length() -> None:
    wire = Wire()
    await wire.writer().end(b"data: {}\n\n")
    assert wire.head[b"content-length"] == b"10"
    assert wire.bodies == [(b"data: {}\n\n", False)]


async def test_the_head_goes_with_the_first_chunk_and_only_once() -> None:
    wire = Wire()
    writer = wire.writer()
    assert await writer.write(b"one")
    assert await writer.write(b"two")
    await writer.end(b"three")
    assert b"content-length" not in wire.head
    assert [m["type"] for m in wire.sent].count("http.response.start") == 1
    assert wire.bodies == [(b"one", True), (b"two", True), (b"three", False)]


async def test_a_silent_response_gets_its_head_alone_from_a_napping_ticker() -> None:
    wire = Wire()
    writer = wire.writer()
    async with ticking(3600) as keepalive:
        await anyio.wait_all_tasks_blocked()  # the ticker naps until its next tick, an hour away
        keepalive.register(writer)
        await wait_until(lambda: bool(wire.sent))
        assert wire.sent[0]["type"] == "http.response.start"
        assert wire.bodies == [(b"", True)]  # the head alone, no comment (the empty body flushes it)
        await writer.end(b"done")
        keepalive.unregister(writer)
    assert b"content-length" not in wire.head
    assert wire.bodies == [(b"", True), (b"done", False)]


async def test_answers_sent_at_once_cost_a_napping_ticker_no_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registration cuts the ticker's nap to half a `HEAD_DELAY` instead of waking it: answers that
    go out with their head before then (most of them) leave it asleep, so it reads no clock."""
    monkeypatch.setattr(response, "HEAD_DELAY", 3600.0)  # the cut nap outlasts the test
    loop_clock, readings = Loop.current().clock, 0

    def clock() -> float:
        nonlocal readings
        readings += 1
        return loop_clock()

    wire = Wire()
    async with ticking(3600, clock) as keepalive:
        await anyio.wait_all_tasks_blocked()  # the ticker naps until its next tick, an hour away
        napping = readings
        for _ in range(3):
            writer = wire.writer()
            keepalive.register(writer)
            await writer.end(b"data: {}\n\n")
            keepalive.unregister(writer)
            await anyio.wait_all_tasks_blocked()
        assert readings == napping
    assert wire.bodies == [(b"data: {}\n\n", False)] * 3


async def test_the_ticker_outlives_a_loop_too_busy_to_wake_it_on_time() -> None:
    """The ticker wakes past its tick, the head's turn and the comment's alike (a loop busy elsewhere),
    and goes on: no negative wait, no crash, and a silent response still gets its comments."""
    wire = Wire()
    writer = wire.writer()
    late = itertools.count(step=10.0)  # every reading 10 s after the last: each wake-up is late
    async with ticking(0.002, lambda: next(late)) as keepalive:
        keepalive.register(writer)
        await wait_until(lambda: len(wire.bodies) >= 2)
        keepalive.unregister(writer)
    assert wire.sent[0]["type"] == "http.response.start"
    assert all(body == b": ping\n\n" for body, _ in wire.bodies)


async def test_a_stalled_send_is_abandoned_while_the_ticker_watches_and_the_response_ends() -> None:
    """A client that stopped reading: the send makes no progress for three ticks, the ticker abandons
    it, the write reports the client gone and the response takes no more frames."""

    class StalledWire(Wire):
        async def send(self, message: Any) -> None:
            await super().send(message)
            if message["type"] == "http.response.body":
                await anyio.sleep_forever()

    wire = StalledWire()
    writer = wire.writer()
    late = itertools.count(step=10.0)  # every wake-up of the ticker is a tick
    async with ticking(0.002, lambda: next(late)) as keepalive:
        keepalive.register(writer)
        with anyio.fail_after(10):
            assert not await writer.write(b"one")
        keepalive.unregister(writer)
    assert not writer.open
    assert not await writer.write(b"two")
    assert wire.bodies == [(b"one", True)]


async def test_a_stalled_send_is_left_to_a_server_that_bounds_its_sends() -> None:
    """On a server that fails stalled sends itself (`SEND_TIMEOUT_EXTENSION`), the ticker does not
    abandon one: the send runs in no scope of its own, and completes when the client reads again."""
    reading = anyio.Event()

    class SlowWire(Wire):
        async def send(self, message: Any) -> None:
            await super().send(message)
            if message["type"] == "http.response.body":
                await reading.wait()

    wire = SlowWire()
    writer = ResponseWriter(wire.send, Loop.current().cancel_scope, SSE_HEADERS, server_bounds_sends=True)
    readings: list[float] = []
    late = itertools.count(step=10.0)  # every wake-up of the ticker is a tick

    def clock() -> float:
        readings.append(next(late))
        return readings[-1]

    async with ticking(0.002, clock) as keepalive:
        keepalive.register(writer)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:

                async def read_after_many_ticks() -> None:
                    await wait_until(lambda: len(readings) > 20)  # far more ticks than the three that abandon
                    reading.set()

                tasks.start_soon(read_after_many_ticks)
                assert await writer.write(b"one")
        keepalive.unregister(writer)
    assert writer.open
    # (The ticker's clock races ahead: its head alone, with an empty body, and comments may come too.)
    assert [body for body, _ in wire.bodies if body and not body.startswith(b":")] == [b"one"]
