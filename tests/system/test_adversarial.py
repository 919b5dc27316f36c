"""Adversarial HTTP/1.1 against real servers: raw bytes over 127.0.0.1 sockets.

uvicorn (h11) serves on the asyncio backend, hypercorn's Trio worker on the trio backend, and the
built-in server (`asgi_mcp._serving.http1`) on both, with each of its parsers (h11, httptools). Requests
are written by hand (malformed ones included) and answers parsed with h11. Every scenario checks the
status (and the JSON-RPC error body where docs/transport.md says there is one), and then that the
app is still healthy: no 5xx from the app, no ERROR logged by the app or the server, no request left
running, no stream left open, no session kept that should not be, and a well-formed request on the
baseline session still answered.

Some malformed requests never reach the app: the ASGI server's HTTP parser (h11 in both) refuses
them first. Those cases are marked `by="server"`, and the test asserts the app did not see them.
Where the two servers differ, the expectation is given per server.

Table-driven families run every case against one live server and report all failing cases at once;
the app's health is checked after each case, so a case that breaks the app is the one reported.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.lowlevel
import h11
import pytest

from asgi_mcp import InMemoryEventStore, McpApp, Tenants
from tests.kit.builtin import builtin_url
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B, UNKNOWN_TOKEN, build_server, factory_of
from tests.kit.messages import LEGACY, MODERN, challenge_params, initialize, modern, notification, request
from tests.kit.polling import wait_until
from tests.kit.raw_http import Conn, ErrorLog, HeaderItems, Reply, Spy, connect, exchange, http_request
from tests.kit.real_servers import serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMIT: Final = 4096
BOTH: Final = "application/json, text/event-stream"
SSE: Final = "text/event-stream"
PING: Final = request(1, "ping")
REFERENCE: Final = {"asyncio": "uvicorn", "trio": "hypercorn"}


class Backend(str):
    """The anyio backend name (what anyio's plugin reads), carrying which server runs on it."""

    server: str  # "reference" (uvicorn or hypercorn) or "builtin-h11" / "builtin-httptools"

    def __new__(cls, backend: str, server: str) -> Backend:
        value = super().__new__(cls, backend)
        value.server = server
        return value


def server_of(backend: str) -> str:
    """The expectation key: "uvicorn", "hypercorn" or "builtin"."""
    server = getattr(backend, "server", "reference")
    return REFERENCE[str(backend)] if server == "reference" else "builtin"


BACKENDS: Final = [(b, s) for b in ("asyncio", "trio") for s in ("reference", "builtin-h11", "builtin-httptools")]


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{s}" for b, s in BACKENDS])
def anyio_backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(*request.param)


CASE_TIMEOUT: Final = 15.0
# What a failing case raises: a wrong answer, no answer, or an answer that is not valid HTTP.
CASE_FAILURES: Final = (AssertionError, TimeoutError, h11.ProtocolError)


class _Unset:
    pass


UNSET: Final = _Unset()


# -- the live app -------------------------------------------------------------------------------


class Live:
    """The app behind a real server, and a raw client for it."""

    def __init__(self, app: McpApp, spy: Spy, port: int, backend: str, token: str | None) -> None:
        self.app = app
        self.spy = spy
        self.port = port
        self.backend = backend
        self.token = token
        self.baseline = ""
        self.sessions = 0  # sessions the test meant to keep

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def headers(
        self,
        *,
        session: str | bytes | None = None,
        version: str | bytes | None = LEGACY,
        accept: str | bytes | None = BOTH,
        content_type: str | bytes | None = "application/json",
        authorization: str | bytes | _Unset | None = UNSET,
        host: str | bytes | _Unset | None = UNSET,
        close: bool = True,
        extra: HeaderItems = (),
    ) -> list[tuple[str | bytes, str | bytes]]:
        items: list[tuple[str | bytes, str | bytes]] = []
        host_value = self.host if isinstance(host, _Unset) else host
        if host_value is not None:
            items.append(("host", host_value))
        if accept is not None:
            items.append(("accept", accept))
        if content_type is not None:
            items.append(("content-type", content_type))
        if version is not None:
            items.append(("mcp-protocol-version", version))
        if session is not None:
            items.append(("mcp-session-id", session))
        auth = (
            (f"Bearer {self.token}" if self.token is not None else None)
            if isinstance(authorization, _Unset)
            else authorization
        )
        if auth is not None:
            items.append(("authorization", auth))
        if close:
            items.append(("connection", "close"))
        items.extend(extra)
        return items

    def raw(
        self,
        method: str = "POST",
        body: bytes = b"",
        *,
        content_length: bool = True,
        target: bytes = b"/mcp",
        http_version: bytes = b"HTTP/1.1",
        **options: Any,
    ) -> bytes:
        items = self.headers(**options)
        if content_length and (body or method == "POST"):
            items.append(("content-length", str(len(body))))
        return http_request(method, items, body, target=target, version=http_version)

    async def send(self, data: bytes, method: str = "POST") -> Reply | None:
        with anyio.fail_after(CASE_TIMEOUT):
            return await exchange(self.port, data, method=method)

    async def request(self, method: str = "POST", body: bytes = b"", **options: Any) -> Reply:
        reply = await self.send(self.raw(method, body, **options), method)
        assert reply is not None, "the server closed the connection without answering"
        return reply

    async def post(self, message: Any, **options: Any) -> Reply:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return await self.request("POST", body, **options)

    async def post_modern(
        self, request_id: int | str, method: str, params: dict[str, Any] | None = None, **options: Any
    ) -> Reply:
        body, headers = modern(request_id, method, params)
        extra = [*headers.items(), *options.pop("extra", ())]
        return await self.post(body, version=None, extra=extra, **options)

    async def open_session(self) -> str:
        reply = await self.post(initialize(0))
        assert reply.status == 200, reply
        assert "result" in reply.answer(), reply
        session_id = reply.header("mcp-session-id")
        assert session_id is not None
        acked = await self.post(notification("notifications/initialized"), session=session_id)
        assert acked.status == 202, acked
        return session_id

    async def delete(self, session_id: str) -> None:
        reply = await self.request("DELETE", session=session_id)
        assert reply.status == 200, reply

    async def settled(self) -> None:
        """Every request the app saw has ended and every stream is closed."""
        await wait_until(lambda: self.spy.in_flight == 0 and self.app.stats()["open_streams"] == 0, timeout=10)

    async def healthy(self) -> None:
        await self.settled()
        stats = self.app.stats()
        assert stats["active_sessions"] == self.sessions, stats
        assert stats["running"], stats
        reply = await self.post(PING, session=self.baseline)
        assert reply.status == 200, reply
        assert reply.answer() == {"jsonrpc": "2.0", "id": 1, "result": {}}, reply


@asynccontextmanager
async def live(backend: str, *, token: str | None = None, **options: Any) -> AsyncIterator[Live]:
    """Serve a fresh app (a baseline session open) on the backend's server; check its health after."""
    options.setdefault("max_body_size", LIMIT)
    if "tenants" not in options:
        options.setdefault("event_store", InMemoryEventStore())
        app = McpApp(build_server(), **options)
    else:
        app = McpApp(**options)
    spy = Spy(app)
    with anyio.fail_after(120):
        server = getattr(backend, "server", "reference")
        serving = (
            serve_http(spy, backend)  # type: ignore[arg-type]
            if server == "reference"
            else builtin_url(spy, server.removeprefix("builtin-"))
        )
        async with serving as base:
            log = ErrorLog().attach()
            try:
                target = Live(app, spy, int(base.rsplit(":", 1)[1]), backend, token)
                target.baseline = await target.open_session()
                target.sessions = 1
                yield target
                await target.healthy()
            finally:
                log.detach()
            assert not log.records, log.summary()
            spy.verify()


# -- expectations -------------------------------------------------------------------------------

Status = int | frozenset[int]


@dataclass(frozen=True)
class Case:
    """One scenario: how to build it, and what must come back."""

    id: str
    build: Callable[[Live], bytes]
    status: Status | Mapping[str, Status]  # per server name when the servers differ
    code: int | None = None  # JSON-RPC error code of the body; None: no body check
    rpc_id: Any = None
    # "app"; "server" when the ASGI server refuses it itself; "app-then-server" when the server
    # ends a request the app already has (a broken chunked body) and answers it
    by: str | Mapping[str, str] = "app"
    method: str = "POST"


def for_server(value: Any, backend: str) -> Any:
    return value[server_of(backend)] if isinstance(value, Mapping) else value


def assert_status(reply: Reply | None, expected: Status) -> Reply:
    assert reply is not None, "the server closed the connection without answering"
    allowed = expected if isinstance(expected, frozenset) else frozenset({expected})
    assert reply.status in allowed, reply
    return reply


def assert_rpc_error(reply: Reply, code: int, rpc_id: Any = None) -> dict[str, Any]:
    assert reply.content_type == "application/json", reply
    body = reply.json()
    assert body.get("jsonrpc") == "2.0", body
    assert "result" not in body, body
    assert body["id"] == rpc_id, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str), body
    return dict(body)


async def check_case(target: Live, case: Case) -> Reply | None:
    seen = len(target.spy.requests)
    reply = await target.send(case.build(target), case.method)
    by = for_server(case.by, target.backend)
    assert_status(reply, for_server(case.status, target.backend))
    assert reply is not None
    if by == "server":
        assert len(target.spy.requests) == seen, f"the app saw a request the server should refuse: {reply}"
    elif by == "app-then-server":
        # The app got the request; the server ended it (a broken body) and answered itself.
        assert len(target.spy.requests) > seen, "the app never saw the request"
    else:
        assert len(target.spy.requests) > seen, "the app never saw the request"
        if case.code is not None:
            assert_rpc_error(reply, case.code, case.rpc_id)
    return reply


async def run_cases(target: Live, cases: Sequence[Case]) -> None:
    """Every case, each followed by a health check; all failures reported together."""
    failures: list[str] = []
    for case in cases:
        try:
            await check_case(target, case)
            await target.healthy()
        except CASE_FAILURES as exc:  # noqa: PERF203 (every case is reported)
            failures.append(f"[{server_of(target.backend)}] {case.id}: {type(exc).__name__}: {exc}")
            target.sessions = target.app.stats()["active_sessions"]  # no cascade into later cases
    assert not failures, "\n".join(failures)


def ping_case(case_id: str, *, status: Any, by: Any = "app", code: int | None = None, **raw: Any) -> Case:
    """A ping on the baseline session, with header options overridden."""

    def build(target: Live) -> bytes:
        options = {"session": target.baseline, **raw}
        return target.raw("POST", json.dumps(PING).encode(), **options)

    return Case(case_id, build, status, code=code, rpc_id=1 if code is not None else None, by=by)


def raw_case(case_id: str, data: Callable[[Live], bytes], *, status: Any, by: Any = "server", **kw: Any) -> Case:
    return Case(case_id, data, status, by=by, **kw)


def ping_bytes(target: Live, *extra: tuple[str | bytes, str | bytes], content_length: bool = True, **kw: Any) -> bytes:
    return target.raw(
        "POST", json.dumps(PING).encode(), session=target.baseline, extra=extra, content_length=content_length, **kw
    )


def patched(target: Live, old: bytes, new: bytes, *extra: tuple[str | bytes, str | bytes]) -> bytes:
    data = ping_bytes(target, *extra)
    assert old in data
    return data.replace(old, new, 1)


# -- malformed HTTP: mostly the server's business ------------------------------------------------

BY_APP: Final = {"uvicorn": "app", "hypercorn": "app"}
CHUNKED_PING: Final = b"%x\r\n%s\r\n0\r\n\r\n" % (len(json.dumps(PING)), json.dumps(PING).encode())

MALFORMED_HTTP: Final = [
    raw_case("garbage request line", lambda t: b"GARBAGE\r\n\r\n", status=400),
    raw_case("HTTP/0.9 request line", lambda t: b"GET /mcp\r\n\r\n", status=400),
    raw_case(
        "header line without colon", lambda t: patched(t, b"x-probe: 1", b"x-probe", ("x-probe", "1")), status=400
    ),
    raw_case("space in header name", lambda t: ping_bytes(t, ("Bad Name", "x")), status=400),
    raw_case("whitespace before colon", lambda t: ping_bytes(t, ("x-probe ", "x")), status=400),
    raw_case("non-ASCII header name", lambda t: ping_bytes(t, (b"x-\xc3\xa9", "v")), status=400),
    raw_case("CR inside a value (injection)", lambda t: ping_bytes(t, ("x-probe", b"a\rX-Injected: 1")), status=400),
    raw_case("NUL inside a value", lambda t: ping_bytes(t, ("x-probe", b"a\x00b")), status=400),
    raw_case(
        "negative Content-Length", lambda t: ping_bytes(t, ("content-length", "-1"), content_length=False), status=400
    ),
    raw_case(
        "non-numeric Content-Length",
        lambda t: ping_bytes(t, ("content-length", "1e3"), content_length=False),
        status=400,
    ),
    raw_case(
        "signed Content-Length", lambda t: ping_bytes(t, ("content-length", "+40"), content_length=False), status=400
    ),
    raw_case(
        "conflicting Content-Lengths",
        lambda t: ping_bytes(t, ("content-length", "40"), ("content-length", "41"), content_length=False),
        status=400,
    ),
    raw_case(
        "30-digit Content-Length",
        lambda t: ping_bytes(t, ("content-length", "9" * 30), content_length=False),
        status=400,
    ),
    raw_case("HTTP/1.1 without Host", lambda t: ping_bytes(t, host=None), status=400),
    raw_case(
        "unsupported Transfer-Encoding",
        lambda t: ping_bytes(t, ("transfer-encoding", "gzip"), content_length=False),
        status={"uvicorn": 400, "hypercorn": 501, "builtin": 400},
    ),
    raw_case(
        "Transfer-Encoding chunked twice",
        lambda t: ping_bytes(
            t, ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked"), content_length=False
        ).replace(json.dumps(PING).encode(), CHUNKED_PING),
        status={"uvicorn": 400, "hypercorn": 501, "builtin": 400},
    ),
    # The request reaches the app; the broken chunk makes the server end it (the app sees a disconnect).
    raw_case(
        "invalid chunk size",
        lambda t: ping_bytes(t, ("transfer-encoding", "chunked"), content_length=False).replace(
            json.dumps(PING).encode(), b"zz\r\nabc\r\n0\r\n\r\n"
        ),
        status=400,
        by="app-then-server",
    ),
    # Accepted by uvicorn and hypercorn (the app answers); refused by the built-in server as
    # request smuggling vectors (RFC 9112 §6.1, §5.2 and §2.2 allow a server to).
    raw_case(
        "Content-Length and chunked (chunked wins)",
        lambda t: ping_bytes(t, ("transfer-encoding", "chunked")).replace(
            json.dumps(PING).encode() + b"", CHUNKED_PING
        ),
        status={"uvicorn": 200, "hypercorn": 200, "builtin": 400},
        by={**BY_APP, "builtin": "server"},
    ),
    raw_case(
        "obsolete line folding",
        lambda t: ping_bytes(t, ("x-folded", b"a\r\n b")),
        status={"uvicorn": 200, "hypercorn": 200, "builtin": 400},
        by={**BY_APP, "builtin": "server"},
    ),
    raw_case(
        "bare LF line endings",
        lambda t: ping_bytes(t).replace(b"\r\n", b"\n"),
        status={"uvicorn": 200, "hypercorn": 200, "builtin": 400},
        by={**BY_APP, "builtin": "server"},
    ),
    raw_case(
        "control character \\x01 in a value", lambda t: ping_bytes(t, ("x-probe", b"a\x01b")), status=200, by="app"
    ),
    # uvicorn hands the method over as sent (the app refuses it); hypercorn upper-cases it.
    raw_case(
        "lowercase method",
        lambda t: ping_bytes(t).replace(b"POST ", b"post ", 1),
        status={"uvicorn": 405, "hypercorn": 200, "builtin": 400},
        by={"uvicorn": "app", "hypercorn": "app", "builtin": "server"},
    ),
    # The built-in server refuses CONNECT itself (no tunnels): 501.
    raw_case(
        "CONNECT",
        lambda t: ping_bytes(t).replace(b"POST ", b"CONNECT ", 1),
        status={"uvicorn": 405, "hypercorn": 405, "builtin": 501},
        by={"uvicorn": "app", "hypercorn": "app", "builtin": "server"},
        method="CONNECT",
    ),
    # uvicorn and hypercorn pass an absolute-form target through as the path: it names no endpoint
    # (404); the built-in server takes the path out of it (RFC 9112 §3.2.2), so the ping is answered.
    raw_case(
        "absolute-form target",
        lambda t: ping_bytes(t).replace(b" /mcp ", f" http://{t.host}/mcp ".encode(), 1),
        status={"uvicorn": 404, "hypercorn": 404, "builtin": 200},
        by="app",
    ),
    raw_case(
        "HTTP/1.0 without Host",
        lambda t: ping_bytes(t, host=None, http_version=b"HTTP/1.0"),
        status=421,
        by="app",
        code=-32600,
    ),
]


async def test_malformed_http(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        await run_cases(target, MALFORMED_HTTP)


# -- bodies: JSON, UTF-8, JSON-RPC shapes, batches ------------------------------------------------


Base = dict[str, Any]


@dataclass(frozen=True)
class Body:
    """A body, as bytes or built from the era's well-formed base request (legacy `ping`; modern
    `tools/list` with its `_meta` envelope, routing headers sent to match); and the answer."""

    id: str
    body: bytes | Callable[[Base], bytes]
    status: int
    code: int | None = None
    rpc_id: Any = None
    modern: tuple[int, int | None, Any] | None = None  # (status, code, id) when the modern wire differs


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def edit(**changes: Any) -> Callable[[Base], bytes]:
    """The base request with members replaced (`_drop` removes them)."""

    def build(base: Base) -> bytes:
        message = {**base, **{k: v for k, v in changes.items() if k != "_drop"}}
        for name in changes.get("_drop", ()):
            message.pop(name, None)
        return js(message)

    return build


def raw_edit(old: bytes, new: bytes) -> Callable[[Base], bytes]:
    def build(base: Base) -> bytes:
        body = js(base)
        assert old in body, body
        return body.replace(old, new, 1)

    return build


BODIES: Final = [
    # not JSON, or not UTF-8: -32700
    Body("truncated JSON", lambda b: js(b)[:-3], 400, -32700),
    Body("empty body", b"", 400, -32700),
    Body("whitespace only", b" \r\n\t ", 400, -32700),
    Body("trailing garbage", lambda b: js(b) + b"}", 400, -32700),
    Body("two objects", lambda b: js(b) + js(b), 400, -32700),
    Body("single quotes", lambda b: js(b).replace(b'"', b"'"), 400, -32700),
    Body("invalid UTF-8 byte", raw_edit(b'"2.0"', b'"2.0\xff"'), 400, -32700),
    Body("overlong UTF-8", raw_edit(b'"2.0"', b'"\xc0\xaf2.0"'), 400, -32700),
    Body("UTF-16 encoded", lambda b: json.dumps(b).encode("utf-16"), 400, -32700),
    Body("UTF-32 encoded", lambda b: json.dumps(b).encode("utf-32"), 400, -32700),
    Body("UTF-8 byte order mark", lambda b: b"\xef\xbb\xbf" + js(b), 400, -32700),
    Body("lone surrogate in the id", edit(id="\ud800"), 400, -32700),
    Body("lone surrogate in the method", raw_edit(b'"method": "', b'"method": "\\udc80'), 400, -32700),
    Body("lone surrogate in a key", raw_edit(b'{"jsonrpc"', b'{"\\udfff": 1, "jsonrpc"'), 400, -32700),
    Body("nested 2000 deep", b"[" * 2000 + b"]" * 2000, 400, -32700),
    Body("integer id of 5000 digits", raw_edit(b'"id": 1', b'"id": ' + b"9" * 5000), 400, -32700),
    # JSON, but not one JSON-RPC message: -32600
    Body("a number", b"42", 400, -32600),
    Body("a string", b'"ping"', 400, -32600),
    Body("null", b"null", 400, -32600),
    Body("true", b"true", 400, -32600),
    Body("empty object", b"{}", 400, -32600),
    Body("missing jsonrpc", edit(_drop=["jsonrpc"]), 400, -32600, 1),
    Body("jsonrpc 1.0", edit(jsonrpc="1.0"), 400, -32600, 1),
    Body("jsonrpc as a number", edit(jsonrpc=2.0), 400, -32600, 1),
    Body("float id", edit(id=1.5), 400, -32600),
    Body("boolean id", edit(id=True), 400, -32600),
    Body("object id", edit(id={"a": 1}), 400, -32600),
    Body("array id", edit(id=[1]), 400, -32600),
    Body("null id on a request", edit(id=None), 400, -32600),
    Body("NaN id", raw_edit(b'"id": 1', b'"id": NaN'), 400, -32600),
    Body("numeric method", edit(method=42), 400, -32600, 1),
    Body("empty method", edit(method=""), 400, -32600, 1),
    Body("array method", edit(method=["ping"]), 400, -32600, 1),
    Body("params array", edit(params=[1, 2]), 400, -32600, 1),
    Body("params string", edit(params="x"), 400, -32600, 1),
    Body("params number on a notification", edit(params=3, _drop=["id"]), 400, -32600),
    Body("response without id", js({"jsonrpc": "2.0", "result": {}}), 400, -32600),
    Body("error response without id", js({"jsonrpc": "2.0", "error": {"code": 1, "message": "x"}}), 400, -32600),
    Body(
        "both result and error",
        js({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}}),
        400,
        -32600,
        1,
    ),
    Body("error not an object", js({"jsonrpc": "2.0", "id": 1, "error": "boom"}), 400, -32600, 1),
    Body("id alone", js({"jsonrpc": "2.0", "id": 1}), 400, -32600, 1),
    # batches (gone since 2025-06-18; refused in every era)
    Body("empty batch", b"[]", 400, -32600),
    Body("batch of one", lambda b: js([b]), 400, -32600),
    Body("batch of two", lambda b: js([b, {**b, "id": 2}]), 400, -32600),
    Body("batch of a notification", js([notification("notifications/initialized")]), 400, -32600),
    Body("batch of responses", js([{"jsonrpc": "2.0", "id": 1, "result": {}}]), 400, -32600),
    # well-formed oddities: the legacy session takes responses; the modern wire does not
    Body("null params", edit(params=None), 200, modern=(400, -32602, 1)),
    Body("100-digit integer id", raw_edit(b'"id": 1', b'"id": ' + b"1" * 100), 200),
    Body("negative id", edit(id=-1), 200),
    Body("string id", edit(id="x" * 300), 200),
    Body(
        "error response with null id",
        js({"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "x"}}),
        202,
        modern=(400, -32600, None),
    ),
    Body("response to nothing", js({"jsonrpc": "2.0", "id": 77, "result": {}}), 202, modern=(400, -32600, None)),
    Body("unknown notification", js(notification("notifications/bogus", {"a": 1})), 202),
]


def _era_base(era: str) -> tuple[Base, list[tuple[str | bytes, str | bytes]], dict[str, Any]]:
    if era == "legacy":
        return dict(PING), [], {}
    message, headers = modern(1, "tools/list")
    return message, list(headers.items()), {"version": None}


async def _check_body(target: Live, case: Body, era: str) -> None:
    base, extra, options = _era_base(era)
    body = case.body if isinstance(case.body, bytes) else case.body(base)
    session = target.baseline if era == "legacy" else None
    reply = await target.post(body, session=session, extra=extra, **options)
    expected = (case.status, case.code, case.rpc_id)
    status, code, rpc_id = case.modern if era == "modern" and case.modern is not None else expected
    assert reply.status == status, reply
    if code is not None:
        assert_rpc_error(reply, code, rpc_id)
    elif status == 202:
        assert reply.body == b"", reply
    else:
        answer = reply.answer()
        assert "result" in answer, answer
        assert answer["id"] == json.loads(body)["id"], answer


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_bodies(anyio_backend: str, era: str) -> None:
    # A limit large enough for the big bodies here: they are refused for their content, not their size.
    async with live(anyio_backend, max_body_size=1 << 16) as target:
        failures: list[str] = []
        for case in BODIES:
            try:
                await _check_body(target, case, era)
                await target.healthy()
            except CASE_FAILURES as exc:  # noqa: PERF203 (every case is reported)
                failures.append(f"[{server_of(anyio_backend)}/{era}] {case.id}: {exc}")
                target.sessions = target.app.stats()["active_sessions"]
        assert not failures, "\n".join(failures)
        # A surrogate *pair*, escaped (as `json.dumps` writes an emoji), is text like any other.
        params = {"name": "echo", "arguments": {"text": "\U0001f600"}}
        if era == "legacy":
            reply = await target.post(call(7, params), session=target.baseline)
        else:
            message, headers = modern(7, "tools/call", params)
            reply = await target.post(message, version=None, extra=list(headers.items()))
        assert b"\\ud83d\\ude00" in js(call(7, params))
        assert reply.status == 200, reply
        assert reply.answer()["result"]["content"][0]["text"] == "\U0001f600", reply


def call(request_id: int, params: dict[str, Any]) -> dict[str, Any]:
    return request(request_id, "tools/call", params)


# -- body size ----------------------------------------------------------------------------------


def padded_ping(size: int) -> bytes:
    """A ping exactly `size` bytes long (JSON whitespace as padding)."""
    body = js(PING)
    return body[:-1] + b" " * (size - len(body)) + b"}"


def chunked(body: bytes, size: int) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


SIZE_CASES: Final = [
    Case("Content-Length at the limit", lambda t: t.raw("POST", padded_ping(LIMIT), session=t.baseline), 200),
    Case(
        "Content-Length one over", lambda t: t.raw("POST", padded_ping(LIMIT + 1), session=t.baseline), 413, code=-32600
    ),
    Case(
        "Content-Length far over", lambda t: t.raw("POST", padded_ping(4 * LIMIT), session=t.baseline), 413, code=-32600
    ),
    Case(
        "chunked at the limit",
        lambda t: t.raw(
            "POST",
            chunked(padded_ping(LIMIT), 100),
            session=t.baseline,
            content_length=False,
            extra=[("transfer-encoding", "chunked")],
        ),
        200,
    ),
    Case(
        "chunked over the limit, no Content-Length",
        lambda t: t.raw(
            "POST",
            chunked(padded_ping(3 * LIMIT), 64),
            session=t.baseline,
            content_length=False,
            extra=[("transfer-encoding", "chunked")],
        ),
        413,
        code=-32600,
    ),
    Case(
        "chunked over the limit in one chunk",
        lambda t: t.raw(
            "POST",
            chunked(padded_ping(2 * LIMIT), 2 * LIMIT),
            session=t.baseline,
            content_length=False,
            extra=[("transfer-encoding", "chunked")],
        ),
        413,
        code=-32600,
    ),
    Case("initialize over the limit", lambda t: t.raw("POST", padded_json(initialize(0), LIMIT + 1)), 413, code=-32600),
    Case(
        "modern request over the limit",
        lambda t: t.raw(
            "POST", padded_json(modern(1, "ping")[0], LIMIT + 1), version=None, extra=list(modern(1, "ping")[1].items())
        ),
        413,
        code=-32600,
    ),
    Case("Content-Length 0", lambda t: t.raw("POST", b"", session=t.baseline), 400, code=-32700),
]


def padded_json(message: dict[str, Any], size: int) -> bytes:
    body = js(message)
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def test_body_limits(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        await run_cases(target, SIZE_CASES)


async def test_declared_oversize_body_is_refused_before_it_arrives(anyio_backend: str) -> None:
    """A huge Content-Length (or Expect: 100-continue) gets 413 at once: nothing is waited for."""
    async with live(anyio_backend) as target:
        for extra in ([], [("expect", "100-continue")]):
            declared = [*extra, ("content-length", str(10**12))]
            head = target.raw("POST", b"", session=target.baseline, content_length=False, extra=declared)
            async with connect(target.port) as conn:
                conn.expect("POST")
                with anyio.fail_after(CASE_TIMEOUT):
                    await conn.send(head)  # and never a body byte
                    reply = await conn.reply()
                    # Let the server hang up first. hypercorn 0.18 (Trio) half-closes a connection
                    # whose request body is unread without its send lock, and a client closing at that
                    # moment makes the app's last (empty) send fail with trio.BusyResourceError.
                    await conn.wait_closed()
            reply = assert_status(reply, 413)
            assert_rpc_error(reply, -32600)
            await target.healthy()


async def test_unread_body_is_not_a_second_request(anyio_backend: str) -> None:
    """After a 413 whose body went unread, that body is never parsed as the next request."""
    async with live(anyio_backend) as target:
        smuggled = http_request("POST", [("host", target.host), ("content-length", "0")], target=b"/smuggled")
        body = smuggled + b" " * (LIMIT + 1 - len(smuggled))
        first = target.raw("POST", body, session=target.baseline, close=False)
        second = target.raw("POST", js(PING), session=target.baseline)
        async with connect(target.port) as conn:
            with anyio.fail_after(CASE_TIMEOUT):
                conn.expect("POST")
                await conn.send(first + second)
                reply = await conn.reply()
                assert_status(reply, 413)
                conn.expect("POST")
                follow = await conn.reply()
        # The server may serve the pipelined request or close the connection; never the smuggled one.
        if follow is not None:
            assert follow.status == 200, follow
        assert all(path != "/smuggled" for _, path in target.spy.requests), target.spy.requests
        await target.healthy()


# -- slow and abandoned bodies ------------------------------------------------------------------


async def app_received(target: Live, total: int) -> None:
    """Poll (checkpoints only) until the app has received `total` body bytes, or answered."""
    responses = len(target.spy.responses)
    with anyio.fail_after(CASE_TIMEOUT):
        while target.spy.body_bytes < total and len(target.spy.responses) == responses:
            await anyio.lowlevel.checkpoint()


async def trickle(
    target: Live, conn: Conn, head: bytes, body_parts: Sequence[bytes], wire: Callable[[bytes], bytes]
) -> None:
    """Send the head a byte at a time, then each body part, waiting until the app received it.

    No sleeping: each body byte is written only once the app has read the previous one, so the
    body reaches the app as a trickle of one-byte messages on both servers.
    """
    for i in range(len(head)):
        await conn.send(head[i : i + 1])
        await anyio.lowlevel.checkpoint()
    start = target.spy.body_bytes
    sent = 0
    answered = len(target.spy.responses)
    for part in body_parts:
        if len(target.spy.responses) != answered:
            break  # the app answered (413) before the body ended
        await conn.send(wire(part))
        sent += len(part)
        await app_received(target, start + sent)


async def test_trickled_request(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        body = js(PING)
        head = target.raw("POST", body, session=target.baseline)[: -len(body)]
        messages = target.spy.body_messages
        async with connect(target.port) as conn:
            conn.expect("POST")
            await trickle(target, conn, head, [body[i : i + 1] for i in range(len(body))], lambda part: part)
            with anyio.fail_after(CASE_TIMEOUT):
                reply = await conn.reply()
        assert_status(reply, 200)
        assert reply is not None
        assert reply.answer() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        # The body really arrived byte by byte.
        assert target.spy.body_messages - messages >= len(body) // 2


async def test_trickled_initialize_opens_one_session(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        body = js(initialize(0))
        head = target.raw("POST", body)[: -len(body)]
        async with connect(target.port) as conn:
            conn.expect("POST")
            await trickle(target, conn, head, [body[i : i + 1] for i in range(len(body))], lambda part: part)
            with anyio.fail_after(CASE_TIMEOUT):
                reply = await conn.reply()
        reply = assert_status(reply, 200)
        session_id = reply.header("mcp-session-id")
        assert session_id is not None
        assert target.app.stats()["active_sessions"] == 2
        await target.delete(session_id)


async def test_trickled_chunked_body_over_the_limit(anyio_backend: str) -> None:
    async with live(anyio_backend, max_body_size=300) as target:
        body = padded_ping(1000)
        head = target.raw(
            "POST", b"", session=target.baseline, content_length=False, extra=[("transfer-encoding", "chunked")]
        )
        start = target.spy.body_bytes
        async with connect(target.port) as conn:
            conn.expect("POST")
            await trickle(
                target, conn, head, [body[i : i + 1] for i in range(len(body))], lambda part: b"1\r\n%s\r\n" % part
            )
            with anyio.fail_after(CASE_TIMEOUT):
                reply = await conn.reply()
                await conn.wait_closed()  # the server hangs up first (see the declared-oversize test)
        reply = assert_status(reply, 413)
        assert_rpc_error(reply, -32600)
        # Refused as soon as the count passed the limit, not after the whole body.
        assert target.spy.body_bytes - start <= 301


@dataclass(frozen=True)
class Abandon:
    id: str
    body: Callable[[Live], tuple[bytes, bytes]]  # (request head, the part of the body actually sent)
    how: str  # "close": the client goes away; "eof": it half-closes its side


def _declared(target: Live, message: dict[str, Any], sent: int, *, session: bool = True) -> tuple[bytes, bytes]:
    body = js(message)
    head = target.raw(
        "POST",
        b"",
        session=target.baseline if session else None,
        content_length=False,
        extra=[("content-length", str(len(body)))],
    )
    return head, body[:sent]


def _chunked_unfinished(target: Live) -> tuple[bytes, bytes]:
    head = target.raw(
        "POST", b"", session=target.baseline, content_length=False, extra=[("transfer-encoding", "chunked")]
    )
    return head, b"40\r\n" + js(PING)[:10]


ABANDONED: Final = [
    Abandon("declared, nothing sent, client leaves", lambda t: _declared(t, PING, 0), "close"),
    Abandon("declared, half sent, client leaves", lambda t: _declared(t, PING, 10), "close"),
    Abandon("declared, half sent, client half-closes", lambda t: _declared(t, PING, 10), "eof"),
    Abandon("chunked, never finished, client leaves", _chunked_unfinished, "close"),
    Abandon("initialize half sent, client leaves", lambda t: _declared(t, initialize(0), 20, session=False), "close"),
    Abandon(
        "initialize half sent, client half-closes", lambda t: _declared(t, initialize(0), 20, session=False), "eof"
    ),
]


@pytest.mark.parametrize("case", ABANDONED, ids=[case.id for case in ABANDONED])
async def test_abandoned_body(anyio_backend: str, case: Abandon) -> None:
    """A client that declares a body and never sends it: the request waits, and ends when the client goes."""
    async with live(anyio_backend) as target:
        head, partial = case.body(target)
        responses = len(target.spy.responses)
        calls = target.spy.receive_calls
        async with connect(target.port) as conn:
            conn.expect("POST")
            await conn.send(head + partial)
            # The app is waiting for the rest of the body ...
            await wait_until(lambda: target.spy.in_flight == 1 and target.spy.receive_calls > calls)
            await app_received(target, target.spy.body_bytes)
            with anyio.move_on_after(0.05):
                await anyio.wait_all_tasks_blocked()
            assert target.spy.in_flight == 1
            assert len(target.spy.responses) == responses, "answered before the body arrived"
            # ... until the client goes away.
            if case.how == "eof":
                await conn.send_eof()
                with anyio.fail_after(CASE_TIMEOUT):
                    reply = await conn.reply()
                # The server may answer the truncated request (400) or just close.
                assert reply is None or 400 <= reply.status < 500, reply
        await target.settled()
        assert target.app.stats()["active_sessions"] == 1


# -- Mcp-Session-Id and Last-Event-ID ------------------------------------------------------------


def session_case(
    case_id: str, value: Callable[[Live], bytes | str], status: int, code: int | None, method: str = "POST"
) -> Case:
    def build(target: Live) -> bytes:
        if method == "POST":
            return target.raw("POST", js(PING), session=value(target))
        if method == "GET":
            return target.raw("GET", session=value(target), accept=SSE, content_type=None)
        return target.raw("DELETE", session=value(target), content_type=None)

    return Case(
        f"{method} {case_id}",
        build,
        status,
        code=code,
        rpc_id=1 if method == "POST" and status == 404 else None,
        method=method,
    )


def _session_values() -> list[tuple[str, Callable[[Live], bytes | str], int, int | None]]:
    return [
        ("non-ASCII UTF-8", lambda t: "sé".encode() + t.baseline.encode(), 400, -32600),
        ("obs-text byte", lambda t: t.baseline.encode() + b"\xff", 400, -32600),
        ("control character", lambda t: t.baseline.encode() + b"\x01", 400, -32600),
        ("DEL", lambda t: t.baseline.encode() + b"\x7f", 400, -32600),
        ("inner space", lambda t: t.baseline[:5] + " " + t.baseline[5:], 400, -32600),
        ("inner tab", lambda t: t.baseline[:5] + "\t" + t.baseline[5:], 400, -32600),
        ("NBSP appended", lambda t: t.baseline.encode() + b"\xc2\xa0", 400, -32600),
        ("257 characters", lambda t: "a" * 257, 400, -32600),
        ("8 KiB", lambda t: "a" * 8192, 400, -32600),
        ("empty", lambda t: "", 400, -32600),
        ("256 characters, unknown", lambda t: "a" * 256, 404, -32600),
        ("path-like, unknown", lambda t: "../../etc/passwd", 404, -32600),
        ("wrong case", lambda t: t.baseline.swapcase(), 404, -32600),
        ("prefix of a live one", lambda t: t.baseline[:-1], 404, -32600),
    ]


SESSION_CASES: Final = [
    session_case(case_id, value, status, code, method)
    for case_id, value, status, code in _session_values()
    for method in ("POST", "GET", "DELETE")
]


async def test_hostile_session_ids(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        await run_cases(target, SESSION_CASES)
        # Whitespace around a value is not part of it (HTTP strips it): the session is found.
        reply = await target.post(PING, session=f"  {target.baseline}\t")
        assert reply.status == 200, reply
        # A repeated header: the first copy counts, as everywhere in asgi_mcp.
        reply = await target.post(PING, session=target.baseline, extra=[("mcp-session-id", "a" * 40)])
        assert reply.status == 200, reply
        reply = await target.post(PING, session="a" * 40, extra=[("mcp-session-id", target.baseline)])
        assert_rpc_error(assert_status(reply, 404), -32600, 1)


@asynccontextmanager
async def get_stream(target: Live, session: str, **options: Any) -> AsyncIterator[tuple[Conn, Reply]]:
    async with connect(target.port) as conn:
        conn.expect("GET")
        with anyio.fail_after(CASE_TIMEOUT):
            await conn.send(target.raw("GET", session=session, accept=SSE, content_type=None, **options))
            head = await conn.head()
        assert head is not None
        yield conn, head


async def test_hostile_last_event_ids(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        # Another session's real event id: it must replay nothing of that session here.
        other = await target.open_session()
        target.sessions += 1
        reply = await target.post(PING, session=other)
        foreign = next(line[4:] for line in reply.body.decode().splitlines() if line.startswith("id: "))
        tag = foreign.partition("/")[0]

        refused: list[tuple[str, bytes]] = [
            ("non-ASCII", "é#1".encode()),
            ("obs-text", b"abc\xff#1"),
            ("control character", b"abc\x01#1"),
            ("inner space", b"abc def#1"),
            ("513 characters", b"a" * 513),
        ]
        for label, value in refused:
            reply = await target.request(
                "GET", session=target.baseline, accept=SSE, content_type=None, extra=[("last-event-id", value)]
            )
            assert reply.status == 400, (label, reply)
            assert_rpc_error(reply, -32600)
            await target.healthy()

        attached: list[tuple[str, str]] = [
            ("bare separator", "#"),
            ("slash", "/"),
            ("no sequence", "abc#"),
            ("negative sequence", f"{tag}/x#-1"),
            ("huge sequence", f"{tag}/get#" + "9" * 400),
            ("superscript-free digits only", "x" * 10 + "#1"),
            ("another session's event", foreign),
            ("another session's stream, sequence 0", foreign.rpartition("#")[0] + "#0"),
        ]
        for label, value in attached:
            async with get_stream(target, target.baseline, extra=[("last-event-id", value)]) as (conn, head):
                assert head.status == 200, (label, head)
                assert head.header("mcp-session-id") == target.baseline
                with anyio.fail_after(CASE_TIMEOUT):
                    first = await conn.chunk()
                # The standalone stream's priming event: nothing of the other session.
                assert b"result" not in first, (label, first)
                assert tag.encode() not in first, (label, first)
            await target.healthy()
        await target.delete(other)
        target.sessions -= 1


async def test_get_stream_lifecycle(anyio_backend: str) -> None:
    """One GET stream per session (409 for a second), freed when its client disconnects."""
    async with live(anyio_backend) as target:
        async with get_stream(target, target.baseline) as (_, head):
            assert head.status == 200, head
            assert target.app.stats()["open_streams"] == 1
            second = await target.request("GET", session=target.baseline, accept=SSE, content_type=None)
            assert_rpc_error(assert_status(second, 409), -32600)
        await target.settled()
        async with get_stream(target, target.baseline) as (_, head):
            assert head.status == 200, head
        await target.settled()
        for label, options in (
            ("no Accept", {"accept": None}),
            ("JSON only", {"accept": "application/json"}),
            ("q=0", {"accept": "text/event-stream;q=0"}),
        ):
            reply = await target.request("GET", session=target.baseline, content_type=None, **options)
            assert reply.status == 406, (label, reply)
        reply = await target.request("GET", accept=SSE, content_type=None)
        assert_rpc_error(assert_status(reply, 400), -32600)


# -- header injection ---------------------------------------------------------------------------


def tenants_app_options() -> dict[str, Any]:
    return {
        "tenants": Tenants({TOKEN_A: factory_of("alpha"), TOKEN_B: factory_of("bravo")}),
        "authorization_servers": ["https://auth.example.com"],
    }


async def test_header_injection(anyio_backend: str) -> None:
    """Request header values that end up in response headers are quoted and cleaned, never raw.

    The 401 challenge's `resource_metadata` is built from the Host header; with `allowed_hosts=["*"]`
    any Host reaches it (on the default loopback policy, these Hosts get 421 first).
    """
    async with live(anyio_backend, token=TOKEN_A, allowed_hosts=["*"], **tenants_app_options()) as target:
        hosts: list[tuple[str, bytes, bool]] = [
            # (case, Host, whether a resource_metadata URL can be built from it)
            ("quote injection", b'localhost", error="injected', True),
            ("backslash", b"localhost\\", True),
            ("control character", b"local\x01host", True),
            ("obs-text", b"localhost\xff\xfe", True),
            ("UTF-8", "l\u043ecalhost".encode(), True),
            ("userinfo", b"localhost:1@evil.example.com", True),
            ("unclosed IPv6", b"[::1", False),
            ("stray bracket", b"localhost:1]", False),
        ]
        for label, host, has_url in hosts:
            reply = await target.post(PING, session=target.baseline, authorization=None, host=host)
            assert reply.status == 401, (label, reply)
            value = reply.header("www-authenticate")
            assert value is not None, (label, reply)
            params = challenge_params(value) if value != "Bearer" else {}
            # No injected parameter; the URL is there when the Host can form one.
            assert set(params) == ({"resource_metadata"} if has_url else set()), (label, value)
            if has_url:
                assert params["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp"), params
            await target.healthy()
        # CR/LF never gets past the servers' parsers; a header split is two headers, neither echoed.
        split = await target.post(PING, session=target.baseline, extra=[("x-probe", "a"), ("X-Injected", "yes")])
        assert split.status == 200, split
        assert split.header("x-injected") is None, split
        split_session = await target.post(PING, session="abc", extra=[("X-Injected", "yes")])
        assert split_session.status == 404, split_session
        assert split_session.header("x-injected") is None
        encoded = await target.request("POST", js(PING), session=target.baseline, target=b"/mcp%0d%0aX-Injected:%20yes")
        assert encoded.status == 404, encoded
        assert encoded.header("x-injected") is None, encoded
        # A tool name with CR/LF, sent (as the spec allows) base64-encoded in Mcp-Name.
        name = "echo\r\nX-Injected: yes"
        mcp_name = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
        body, headers = modern(3, "tools/call", {"name": name, "arguments": {}})
        headers["mcp-name"] = mcp_name
        reply = await target.post(body, version=None, extra=list(headers.items()))
        assert reply.status < 500, reply
        assert reply.header("x-injected") is None, reply
        # The raw token never comes back, whatever was wrong with the request.
        for reply in (split, split_session, encoded):
            assert TOKEN_A.encode() not in reply.body
            assert all(TOKEN_A.encode() not in v for _, v in reply.headers)


# -- methods, paths, Host and Origin -------------------------------------------------------------

ALLOW_ALL: Final = "GET, POST, DELETE"
APP_405: Final = {"uvicorn": 405, "hypercorn": 405}


def method_case(
    method: str, status: Any, allow: str | None, *, code: int | None = -32600, by: Any = "app", **options: Any
) -> tuple[Case, str | None]:
    def build(target: Live) -> bytes:
        body = js(PING) if method not in ("HEAD", "OPTIONS", "TRACE") else b""
        return target.raw(method, body, session=target.baseline, **options)

    return Case(f"{method} {options or ''}".strip(), build, status, code=code, method=method, by=by), allow


METHOD_CASES: Final = [
    method_case("PUT", 405, ALLOW_ALL),
    method_case("PATCH", 405, ALLOW_ALL),
    method_case("TRACE", 405, ALLOW_ALL),
    # llhttp knows a fixed list of methods, so the built-in server refuses others with either parser.
    method_case("FOO", {**APP_405, "builtin": 400}, ALLOW_ALL, by={**BY_APP, "builtin": "server"}),
    method_case("HEAD", 405, ALLOW_ALL, code=None),
    method_case("OPTIONS", 405, ALLOW_ALL),
    method_case(
        "OPTIONS",
        405,
        ALLOW_ALL,
        extra=[("origin", "http://localhost:3000"), ("access-control-request-method", "POST")],
    ),
    method_case(
        "OPTIONS", 403, None, extra=[("origin", "http://evil.example.com"), ("access-control-request-method", "POST")]
    ),
    method_case("PUT", 405, ALLOW_ALL, version=MODERN),
    method_case("GET", 405, "POST", version=MODERN, accept=SSE),
    method_case("DELETE", 405, "POST", version=MODERN),
]


async def test_wrong_methods(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        failures: list[str] = []
        for case, allow in METHOD_CASES:
            try:
                reply = await check_case(target, case)
                assert reply is not None
                if for_server(case.by, anyio_backend) == "app":
                    assert reply.header("allow") == allow, reply
                if case.method == "HEAD":
                    assert reply.body == b"", reply
                await target.healthy()
            except CASE_FAILURES as exc:  # noqa: PERF203 (every case is reported)
                failures.append(f"[{server_of(anyio_backend)}] {case.id}: {exc}")
        assert not failures, "\n".join(failures)
        for path in (b"/MCP", b"/mcp//", b"/mcp/x", b"/mcp%00", b"/%2e%2e/mcp", b"/"):
            reply = await target.request("POST", js(PING), session=target.baseline, target=path)
            assert reply.status == 404, (path, reply)
            assert reply.json() == {"error": "not_found"}, (path, reply)
        for path in (b"/mcp/", b"/mcp?x=1", b"/mcp?%0d%0a"):
            reply = await target.request("POST", js(PING), session=target.baseline, target=path)
            assert reply.status == 200, (path, reply)


def origin_case(case_id: str, status: int, *, by: str = "app", **options: Any) -> Case:
    """A ping on the baseline session; a refusal comes before the body is read, so it names no id."""

    def build(target: Live) -> bytes:
        return target.raw("POST", js(PING), **{"session": target.baseline, **options})

    code = -32600 if status in (421, 403) else None
    return Case(case_id, build, status, code=code, by=by)


HOST_ORIGIN_CASES: Final = [
    origin_case("Host evil.example.com", 421, host="evil.example.com"),
    origin_case(
        "Host and Origin evil (DNS rebinding)",
        421,
        host="evil.example.com",
        extra=[("origin", "http://evil.example.com")],
    ),
    origin_case("Host loopback-looking subdomain", 421, host="127.0.0.1.evil.example.com"),
    origin_case("Host empty", 421, host=""),
    origin_case("Host non-ASCII", 421, host="l\u043ecalhost".encode()),  # Cyrillic o
    origin_case("Host obs-text", 421, host=b"\xffhost"),
    origin_case("Host with two ports", 421, host="127.0.0.1:80:80"),
    origin_case("Host with userinfo-like port", 421, host="localhost:1@evil.example.com"),
    origin_case("Host with a non-numeric port", 421, host="localhost:http"),
    origin_case("Host with obs-text port", 421, host=b"localhost:\xff"),
    origin_case("Host unclosed IPv6", 421, host="[::1"),
    origin_case("Host IPv6 with trailing junk", 421, host="[::1]x"),
    origin_case("Host IPv6 with non-numeric port", 421, host="[::1]:x"),
    origin_case("Origin evil", 403, extra=[("origin", "http://evil.example.com")]),
    origin_case("Origin null", 403, extra=[("origin", "null")]),
    origin_case("Origin loopback-looking", 403, extra=[("origin", "http://localhost.evil.example.com")]),
    origin_case("Origin malformed IPv6", 403, extra=[("origin", "http://[::1")]),
    origin_case("Origin malformed port", 403, extra=[("origin", "http://evil.example.com:port")]),
    origin_case("Origin obs-text", 403, extra=[("origin", b"http://\xff")]),
    origin_case("Origin without scheme", 403, extra=[("origin", "evil.example.com")]),
    origin_case("Origin loopback", 200, extra=[("origin", "http://127.0.0.1:3000")]),
    origin_case("Origin IPv6 loopback", 200, extra=[("origin", "http://[::1]:3000")]),
    origin_case("Host IPv6 loopback", 200, host="[::1]:80"),
    origin_case("Host localhost", 200, host="localhost"),
    origin_case("Host with an empty port", 200, host="localhost:"),
    # Both servers refuse a repeated Host themselves (RFC 9112 §3.2).
    origin_case("Host twice, evil first", 400, by="server", host="evil.example.com", extra=[("host", "127.0.0.1")]),
    origin_case("Host twice, evil second", 400, by="server", extra=[("host", "evil.example.com")]),
    # A repeated Origin reaches the app: the first copy counts, as everywhere in asgi_mcp.
    origin_case(
        "Origin twice, evil first", 403, extra=[("origin", "http://evil.example.com"), ("origin", "http://127.0.0.1")]
    ),
]


async def test_host_and_origin(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        await run_cases(target, HOST_ORIGIN_CASES)


# -- the modern wire: routing headers ------------------------------------------------------------


def modern_case(
    case_id: str,
    status: int,
    code: int | None,
    *,
    method: str = "tools/list",
    params: dict[str, Any] | None = None,
    headers: Callable[[dict[str, str]], list[tuple[str | bytes, str | bytes]]] = lambda h: list(h.items()),
    body: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b,
    rpc_id: Any = 5,
) -> Case:
    def build(target: Live) -> bytes:
        message, routing = modern(5, method, params)
        return target.raw("POST", js(body(message)), version=None, extra=headers(routing))

    return Case(case_id, build, status, code=code, rpc_id=rpc_id if code is not None else None)


def _twice(name: str, second: str | None = None) -> Callable[[dict[str, str]], list[tuple[str | bytes, str | bytes]]]:
    def headers(routing: dict[str, str]) -> list[tuple[str | bytes, str | bytes]]:
        return [*routing.items(), (name, second if second is not None else routing[name])]

    return headers


def _without(name: str) -> Callable[[dict[str, str]], list[tuple[str | bytes, str | bytes]]]:
    return lambda routing: [(k, v) for k, v in routing.items() if k != name]


def _with(*extra: tuple[str | bytes, str | bytes]) -> Callable[[dict[str, str]], list[tuple[str | bytes, str | bytes]]]:
    return lambda routing: [*routing.items(), *extra]


def _replace(name: str, value: str | bytes) -> Callable[[dict[str, str]], list[tuple[str | bytes, str | bytes]]]:
    return lambda routing: [(k, value if k == name else v) for k, v in routing.items()]


ECHO: Final = {"name": "echo", "arguments": {"text": "hi"}}
REGION: Final = {"name": "region_echo", "arguments": {"region": "eu"}}

MODERN_CASES: Final = [
    modern_case("Mcp-Method twice", 400, -32020, headers=_twice("mcp-method")),
    modern_case("Mcp-Method twice, disagreeing", 400, -32020, headers=_twice("mcp-method", "tools/list")),
    modern_case("Mcp-Name twice", 400, -32020, method="tools/call", params=ECHO, headers=_twice("mcp-name")),
    modern_case("MCP-Protocol-Version twice", 400, -32020, headers=_twice("mcp-protocol-version")),
    modern_case(
        "MCP-Protocol-Version twice, legacy second", 400, -32020, headers=_twice("mcp-protocol-version", LEGACY)
    ),
    modern_case("Mcp-Method disagrees with the body", 400, -32020, headers=_replace("mcp-method", "prompts/list")),
    modern_case("Mcp-Method missing", 400, -32020, headers=_without("mcp-method")),
    modern_case("Mcp-Name missing", 400, -32020, method="tools/call", params=ECHO, headers=_without("mcp-name")),
    modern_case(
        "Mcp-Name bad base64",
        400,
        -32020,
        method="tools/call",
        params=ECHO,
        headers=_replace("mcp-name", "=?base64?!!!?="),
    ),
    modern_case(
        "Mcp-Name raw non-ASCII",
        400,
        -32020,
        method="tools/call",
        params=ECHO,
        headers=_replace("mcp-name", b"\xc3\xa9cho"),
    ),
    modern_case(
        "Mcp-Param twice",
        400,
        -32020,
        method="tools/call",
        params=REGION,
        headers=_with(("mcp-param-region", "eu"), ("mcp-param-region", "eu")),
    ),
    modern_case(
        "Mcp-Param disagrees",
        400,
        -32020,
        method="tools/call",
        params=REGION,
        headers=_with(("mcp-param-region", "us")),
    ),
    modern_case("unknown method", 404, -32601, method="no/such/method"),
    modern_case("unsupported version", 400, -32022, headers=_replace("mcp-protocol-version", "2099-01-01")),
    modern_case(
        "version with a control character", 400, -32022, headers=_replace("mcp-protocol-version", b"2026-07-28\x01")
    ),
    modern_case("no _meta in the body", 400, -32602, body=lambda b: {k: v for k, v in b.items() if k != "params"}),
    modern_case(
        "a response",
        400,
        -32600,
        body=lambda b: {"jsonrpc": "2.0", "id": 5, "result": {}},
        rpc_id=None,
    ),
    modern_case("a notification", 202, None, body=lambda b: {"jsonrpc": "2.0", "method": "notifications/initialized"}),
    modern_case("initialize on the modern wire", 400, -32602, method="initialize", body=lambda b: initialize(5)),
    # Ignored on the modern wire, however hostile.
    modern_case(
        "hostile session and event ids",
        200,
        None,
        headers=_with(("mcp-session-id", b"\x01\xff"), ("last-event-id", b"\xff#\x01")),
    ),
    modern_case(
        "300 unknown Mcp-Param headers",
        200,
        None,
        method="tools/call",
        params=ECHO,
        headers=_with(*[(f"mcp-param-x{i}", "v") for i in range(300)]),
    ),
]


async def test_modern_routing_headers(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        await run_cases(target, MODERN_CASES)


# -- Authorization ------------------------------------------------------------------------------

AUTH_VARIANTS: Final[list[tuple[str, str | bytes | None, int, str | None]]] = [
    # (case, Authorization header, status, the challenge's `error`)
    ("no header", None, 401, None),
    ("no scheme", TOKEN_A, 401, None),
    ("Basic scheme", "Basic " + base64.b64encode(f"user:{TOKEN_A}".encode()).decode(), 401, None),
    ("scheme only", "Bearer", 401, None),
    ("empty token", "Bearer   ", 401, None),
    ("token with a space", f"Bearer {TOKEN_A[:6]} {TOKEN_A[6:]}", 401, None),
    ("token then junk", f"Bearer {TOKEN_A} junk", 401, None),
    ("tab after scheme", f"Bearer\t{TOKEN_A}", 401, None),
    ("scheme glued to token", f"Bearer{TOKEN_A}", 401, None),
    ("unknown token", f"Bearer {UNKNOWN_TOKEN}", 401, "invalid_token"),
    ("token with a control character", f"Bearer {TOKEN_A}".encode() + b"\x01", 401, "invalid_token"),
    ("token with obs-text", f"Bearer {TOKEN_A}".encode() + b"\xff", 401, "invalid_token"),
    ("token with quotes", f'Bearer {TOKEN_A}"x\\', 401, "invalid_token"),
    ("8 KiB token", "Bearer " + "t" * 8192, 401, "invalid_token"),
    ("lowercase bearer", f"bearer {TOKEN_A}", 200, None),
    ("uppercase BEARER", f"BEARER {TOKEN_A}", 200, None),
    ("two spaces", f"Bearer  {TOKEN_A}", 200, None),
    ("another tenant's token", f"Bearer {TOKEN_B}", 404, None),  # the session is A's: as if unknown
]


async def test_authorization_variants(anyio_backend: str) -> None:
    async with live(anyio_backend, token=TOKEN_A, **tenants_app_options()) as target:
        failures: list[str] = []
        for label, header, status, error in AUTH_VARIANTS:
            try:
                for kind in ("session request", "initialize"):
                    if kind == "initialize":
                        reply = await target.post(initialize(0), authorization=header)
                        expected = 200 if status == 404 else status  # B may open its own session
                    else:
                        reply = await target.post(PING, session=target.baseline, authorization=header)
                        expected = status
                    assert reply.status == expected, (kind, reply)
                    for token in (TOKEN_A, TOKEN_B):
                        assert token.encode() not in reply.body, (kind, reply)
                        assert all(token.encode() not in value for _, value in reply.headers), (kind, reply)
                    if expected == 401:
                        value = reply.header("www-authenticate")
                        assert value is not None, (kind, reply)
                        assert value.startswith("Bearer"), (kind, reply)
                        assert challenge_params(value).get("error") == error, (kind, value)
                        assert reply.json()["error"] == "invalid_token", reply
                    elif expected == 404:
                        assert_rpc_error(reply, -32600, 1)
                    elif kind == "initialize":
                        session_id = reply.header("mcp-session-id")
                        assert session_id is not None
                        await target.request("DELETE", session=session_id, authorization=header)
                    await target.healthy()
            except CASE_FAILURES as exc:  # noqa: PERF203 (every case is reported)
                failures.append(f"[{server_of(anyio_backend)}] {label}: {exc}")
                target.sessions = target.app.stats()["active_sessions"]
        assert not failures, "\n".join(failures)
        # A repeated Authorization header: the first copy counts.
        reply = await target.post(PING, session=target.baseline, extra=[("authorization", f"Bearer {UNKNOWN_TOKEN}")])
        assert reply.status == 200, reply
        assert target.app.stats()["sessions_per_tenant"] == {
            "tok-" + target.app.config.tenants.lookup(TOKEN_A).digest.hex()[:12]: 1
        }  # type: ignore[union-attr]


# -- initialize refusals keep no session ---------------------------------------------------------

INIT: Final = js(initialize(0))

INIT_REFUSALS: Final = [
    Case("params missing", lambda t: t.raw("POST", js(request(0, "initialize"))), 400, code=-32602, rpc_id=0),
    Case("params empty", lambda t: t.raw("POST", js(request(0, "initialize", {}))), 400, code=-32602, rpc_id=0),
    Case(
        "params of the wrong types",
        lambda t: t.raw(
            "POST", js(request(0, "initialize", {"protocolVersion": 5, "capabilities": [], "clientInfo": "x"}))
        ),
        400,
        code=-32602,
        rpc_id=0,
    ),
    Case(
        "params array",
        lambda t: t.raw("POST", js({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": []})),
        400,
        code=-32600,
        rpc_id=0,
    ),
    Case(
        "as a notification",
        lambda t: t.raw("POST", js(notification("initialize", initialize(0)["params"]))),
        400,
        code=-32600,
    ),
    Case("Accept: JSON only", lambda t: t.raw("POST", INIT, accept="application/json"), 406, code=-32600),
    Case("Accept: SSE only", lambda t: t.raw("POST", INIT, accept=SSE), 406, code=-32600),
    Case("no Accept", lambda t: t.raw("POST", INIT, accept=None), 406, code=-32600),
    Case("Content-Type text/plain", lambda t: t.raw("POST", INIT, content_type="text/plain"), 415, code=-32600),
    Case("no Content-Type", lambda t: t.raw("POST", INIT, content_type=None), 415, code=-32600),
    Case(
        "Content-Type with junk", lambda t: t.raw("POST", INIT, content_type=b"application/json\x01"), 415, code=-32600
    ),
    Case("unsupported version header", lambda t: t.raw("POST", INIT, version="1999-01-01"), 400, code=-32022, rpc_id=0),
    Case("invalid JSON", lambda t: t.raw("POST", INIT[:-2]), 400, code=-32700),
    Case("with a batch", lambda t: t.raw("POST", b"[" + INIT + b"]"), 400, code=-32600),
]


async def test_refused_initialize_keeps_no_session(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        await run_cases(target, INIT_REFUSALS)


async def test_session_limit(anyio_backend: str) -> None:
    async with live(anyio_backend, max_sessions=2) as target:
        target.spy.allowed_5xx.add(503)
        second = await target.open_session()
        target.sessions += 1
        for _ in range(3):
            reply = await target.post(initialize(0))
            assert_rpc_error(assert_status(reply, 503), -32000)
            await target.healthy()
        await target.delete(second)
        target.sessions -= 1
        third = await target.open_session()
        await target.delete(third)


# -- many and huge headers ----------------------------------------------------------------------


async def test_many_and_huge_headers(anyio_backend: str) -> None:
    async with live(anyio_backend) as target:
        # Under the header limits (h11: 16 KiB per read, the built-in server: 32 KiB): the app answers.
        reply = await target.post(PING, session=target.baseline, extra=[(f"x-h{i}", "v") for i in range(1500)])
        assert reply.status == 200, reply
        reply = await target.post(PING, session=target.baseline, extra=[("mcp-session-id", "x")] * 1500)
        assert reply.status == 200, reply
        reply = await target.post(PING, session=target.baseline, extra=[("x-big", "a" * 12_000)])
        assert reply.status == 200, reply
        await target.healthy()
        # Over it: h11 enforces the limit only while a header block is incomplete, so whether the
        # server refuses (400/431) or the app gets the request depends on how the bytes arrive.
        over: dict[str, frozenset[int]] = {
            "uvicorn": frozenset({200, 400}),
            "hypercorn": frozenset({431}),
            "builtin": frozenset({431}),
        }
        for extra in ([("x-big", "a" * 70_000)], [(f"x-h{i}", "v") for i in range(20_000)]):
            reply = await target.post(PING, session=target.baseline, extra=extra)
            assert_status(reply, over[server_of(anyio_backend)])
            await target.healthy()
