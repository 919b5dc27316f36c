"""Generated request streams against the built-in server: pipelined requests (some malformed), split
at random byte boundaries, sometimes cut off by a disconnect. No 5xx, no hang, no crash, every
answer in order and right, and no connection or request left behind (a stop with a long grace
period returns at once). Both parsers, both backends.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial
from typing import Final

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_mcp._serving.http1 import ServerConfig, serve
from tests.kit.http1_app import Probe, ProbeApp
from tests.kit.polling import wait_until
from tests.kit.raw_http import Conn

from .test_protocol import parser

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

__all__ = ["parser"]

MALFORMED: Final = [
    b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nhost: t\r\nx-a: a\r\n b\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nhost: t\r\nx-a: a\rb\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
]


@dataclass(frozen=True)
class Request:
    data: bytes
    method: str
    answer: bytes | None  # the expected body; None for a malformed request (4xx, then close)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    if draw(st.integers(0, 9)) == 0:
        return Request(draw(st.sampled_from(MALFORMED)), "GET", None)
    kind = draw(st.sampled_from(["get", "head", "length", "chunked"]))
    body = draw(st.binary(max_size=300))
    if kind in ("get", "head"):
        method = kind.upper()
        return Request(f"{method} /echo HTTP/1.1\r\nhost: t\r\n\r\n".encode(), method, b"")
    if kind == "length":
        head = f"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        return Request(head + body, "POST", body)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=4))) | {0, len(body)})
    chunks = b"".join(b"%x\r\n%s\r\n" % (b - a, body[a:b]) for a, b in itertools.pairwise(cuts) if b > a)
    head = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    return Request(head + chunks + b"0\r\n\r\n", "POST", body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(requests(), min_size=1, max_size=5),
    splits=st.lists(st.integers(0, 4000), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
)
async def test_generated_streams(parser: str, batch: list[Request], splits: list[int], cut: int | None) -> None:
    probe = Probe()
    stop = anyio.Event()
    config = ServerConfig(port=0, parser=parser, graceful_timeout=30)  # type: ignore[arg-type]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            address = await tg.start(partial(serve, ProbeApp(probe), config, shutdown_trigger=stop.wait))
            stream = await anyio.connect_tcp("127.0.0.1", address.port)
            conn = Conn(stream)
            try:
                await exchange_batch(conn, batch, splits, cut)
            finally:
                await conn.aclose()
            await wait_until(lambda: probe.in_flight == 0)
            started = anyio.current_time()
            stop.set()
        # Nothing was left running: stopping did not wait for the 30 s grace period.
        assert anyio.current_time() - started < 5


async def exchange_batch(conn: Conn, batch: list[Request], splits: list[int], cut: int | None) -> None:
    data = b"".join(request.data for request in batch)
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    points = sorted({0, len(data), *(point % (len(data) + 1) for point in splits)})
    for start, end in itertools.pairwise(points):
        await conn.send(data[start:end])
    if cut is not None:
        return  # the client goes away mid-stream
    for request in batch:
        conn.expect(request.method)
        reply = await conn.reply()
        assert reply is not None, "no answer"
        if request.answer is None:
            assert 400 <= reply.status < 500, reply
            return  # the server closes after refusing
        assert reply.status == 200, reply
        assert reply.body == (b"" if request.method == "HEAD" else request.answer), reply
