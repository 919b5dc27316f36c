"""The same malformed and edge-case requests to the built-in server (h11 and httptools) and to the
reference servers of the backend (uvicorn with h11 and with httptools on asyncio, hypercorn's Trio
worker on Trio).

Compared is the class of outcome: 2xx, 4xx, 5xx or "closed" (no answer). The two parsers of the
built-in server must agree exactly (same status). With each reference server the class must agree,
except where `DIVERGES` says why not. No 5xx anywhere (but hypercorn's 501 for a Transfer-Encoding
it does not support).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Final

import anyio
import pytest

from tests.kit.builtin import builtin_url
from tests.kit.http1_app import Probe, ProbeApp
from tests.kit.polling import wait_until
from tests.kit.raw_http import exchange
from tests.kit.real_servers import hypercorn_trio_server, quiet_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

H: Final = b"host: t\r\n"
CL2: Final = b"content-length: 2\r\n"

CASES: Final[dict[str, bytes]] = {
    "plain GET": b"GET /echo HTTP/1.1\r\n" + H + b"\r\n",
    "POST with a body": b"POST /echo HTTP/1.1\r\n" + H + CL2 + b"\r\nhi",
    "chunked POST": b"POST /echo HTTP/1.1\r\n" + H + b"transfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "chunk extension": b"POST /echo HTTP/1.1\r\n" + H + b"transfer-encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\n\r\n",
    "HEAD": b"HEAD /echo HTTP/1.1\r\n" + H + b"\r\n",
    "HTTP/1.0 without Host": b"GET /echo HTTP/1.0\r\n\r\n",
    "empty value": b"GET /echo HTTP/1.1\r\n" + H + b"x-e:\r\n\r\n",
    "control character \\x01": b"GET /echo HTTP/1.1\r\n" + H + b"x-a: a\x01b\r\n\r\n",
    "obs-text byte \\xff": b"GET /echo HTTP/1.1\r\n" + H + b"x-a: a\xffb\r\n\r\n",
    "garbage": b"GARBAGE\r\n\r\n",
    "HTTP/0.9": b"GET /echo\r\n\r\n",
    "no Host": b"GET /echo HTTP/1.1\r\n\r\n",
    "space in a name": b"GET /echo HTTP/1.1\r\n" + H + b"x a: 1\r\n\r\n",
    "space before colon": b"GET /echo HTTP/1.1\r\n" + H + b"x-a : 1\r\n\r\n",
    "no colon": b"GET /echo HTTP/1.1\r\n" + H + b"x-a\r\n\r\n",
    "bare CR": b"GET /echo HTTP/1.1\r\n" + H + b"x-a: a\rb\r\n\r\n",
    "NUL": b"GET /echo HTTP/1.1\r\n" + H + b"x-a: a\x00b\r\n\r\n",
    "negative CL": b"POST /echo HTTP/1.1\r\n" + H + b"content-length: -1\r\n\r\n",
    "signed CL": b"POST /echo HTTP/1.1\r\n" + H + b"content-length: +2\r\n\r\nhi",
    "conflicting CLs": b"POST /echo HTTP/1.1\r\n" + H + CL2 + b"content-length: 3\r\n\r\nhi",
    "huge CL": b"POST /echo HTTP/1.1\r\n" + H + b"content-length: " + b"9" * 30 + b"\r\n\r\n",
    "TE gzip": b"POST /echo HTTP/1.1\r\n" + H + b"transfer-encoding: gzip\r\n\r\n",
    "TE twice": b"POST /echo HTTP/1.1\r\n" + H + b"transfer-encoding: chunked\r\n" * 2 + b"\r\n0\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\n" + H + b"transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "control in target": b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n",
    # Where the built-in server is stricter (see STRICTER).
    "CL and TE": b"POST /echo HTTP/1.1\r\n" + H + b"content-length: 7\r\ntransfer-encoding: chunked\r\n\r\n"
    b"2\r\nhi\r\n0\r\n\r\n",
    "obs-fold": b"GET /echo HTTP/1.1\r\n" + H + b"x-a: a\r\n b\r\n\r\n",
    "bare LF": b"GET /echo HTTP/1.1\n" + b"host: t\n\n",
    "CL twice, same": b"POST /echo HTTP/1.1\r\n" + H + CL2 + CL2 + b"\r\nhi",
    "lower-case method": b"get /echo HTTP/1.1\r\n" + H + b"\r\n",
    "unknown method": b"FOO /echo HTTP/1.1\r\n" + H + b"\r\n",
    "HTTP/1.2": b"GET /echo HTTP/1.1\r\n".replace(b"1.1", b"1.2") + H + b"\r\n",
}
# Where the built-in server (both parsers) answers another class than a reference server, and why.
# Everything else must match. Stale entries fail the test too.
STRICTER: Final = (
    "CL and TE",
    "obs-fold",
    "bare LF",
    "CL twice, same",
    "lower-case method",
    "unknown method",
    "HTTP/1.2",
)
STRICT: Final = "refused by the built-in server: a smuggling vector, or what llhttp cannot parse"
DIVERGES: Final[dict[tuple[str, str], str]] = {
    **{
        (case, ref): STRICT
        for case in ("CL and TE", "obs-fold", "bare LF", "CL twice, same")
        for ref in ("uvicorn-h11", "hypercorn")
    },
    **{
        (case, ref): STRICT
        for case in ("lower-case method", "unknown method", "HTTP/1.2")
        for ref in ("uvicorn-h11", "hypercorn")
    },
    ("HTTP/0.9", "uvicorn-httptools"): "llhttp parses HTTP/0.9; the built-in server refuses it as h11 does",
    ("no Host", "uvicorn-httptools"): "llhttp does not require Host; the built-in server does, as h11",
    ("control character \\x01", "uvicorn-httptools"): "llhttp refuses it; the built-in server accepts it as h11",
    ("TE gzip", "hypercorn"): "hypercorn answers 501",
    ("TE twice", "hypercorn"): "hypercorn answers 501",
}


def outcome(reply: Any) -> str:
    return "closed" if reply is None else f"{reply.status // 100}xx"


async def outcomes(serving: Callable[[Any], AbstractAsyncContextManager[str]]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    async with serving(ProbeApp(Probe())) as url:
        port = int(url.rsplit(":", 1)[1])
        for name, data in CASES.items():
            method = "HEAD" if data.startswith(b"HEAD") else "GET"
            with anyio.fail_after(10):
                reply = await exchange(port, data, method=method)
            found[name] = (outcome(reply), 0 if reply is None else reply.status)
    return found


@asynccontextmanager
async def uvicorn_with(http: str, app: Any) -> AsyncIterator[str]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, lifespan="on", log_level="critical")  # type: ignore[arg-type]
    sock = config.bind_socket()
    server = quiet_uvicorn(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(server.serve, sockets=[sock]))
            await wait_until(lambda: server.started or server.should_exit, timeout=10)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


REFERENCES: Final = {
    "asyncio": {"uvicorn-h11": partial(uvicorn_with, "h11"), "uvicorn-httptools": partial(uvicorn_with, "httptools")},
    "trio": {"hypercorn": hypercorn_trio_server},
}


async def test_differential(anyio_backend: str | tuple[str, dict[str, Any]]) -> None:
    h11 = await outcomes(lambda app: builtin_url(app, "h11"))
    httptools = await outcomes(lambda app: builtin_url(app, "httptools"))
    assert h11 == httptools, {k: (h11[k], httptools[k]) for k in CASES if h11[k] != httptools[k]}
    assert not [name for name in CASES if h11[name][0] == "5xx"]
    unexpected: dict[str, Any] = {}
    backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]  # uvloop is asyncio's
    for ref, serving in REFERENCES[backend].items():
        reference = await outcomes(serving)
        for name in CASES:
            assert reference[name][0] != "5xx" or reference[name][1] == 501, (ref, name, reference[name])
            diverges = h11[name][0] != reference[name][0]
            if diverges != ((name, ref) in DIVERGES):
                unexpected[f"{ref}: {name}"] = {"builtin": h11[name], ref: reference[name]}
            if diverges and DIVERGES.get((name, ref)) == STRICT:
                assert h11[name][0] == "4xx", (ref, name, h11[name])
    assert not unexpected, unexpected
