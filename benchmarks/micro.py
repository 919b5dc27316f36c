"""In-process microbenchmarks: the sans-IO core, and one request through the ASGI callable, no socket.

Two groups of ops, so a regression shows without a network, a server or a load generator:

* `core.*`: the pure functions and tables one request goes through (header decoding, era and Accept
  negotiation, JSON-RPC classification, SSE framing, the session table, the tenant registry, the
  Host/Origin and CORS checks). Timed with `timeit` (garbage collector off, as `timeit` does).
* `asgi.*`: one complete `tools/call` through an app's ASGI callable with in-memory receive/send
  (`benchmarks.profile_legacy.request`), one at a time, after an untimed lifespan startup and, for
  the legacy era, an untimed initialize handshake. McpApp and the SDK's `streamable_http_app()` serve
  the same `echo` server (`benchmarks.apps`); `asgi.floor` is the harness alone around a trivial app.
  The garbage collector stays on here (its cost grows with what a request allocates); `--no-gc`
  turns it off.

Every op runs once and its result is checked before it is timed, so a broken op fails instead of
timing fast. Each op is calibrated (1, 2, 5, 10, ... calls until one batch takes `--min-time`), then
timed in `--repeat` batches; the table shows the min and the median per call. `--iterations N` skips
the calibration: every batch is exactly N calls, so a run does a fixed amount of work (what counting
instructions under callgrind needs; `benchmarks.instructions` does that for every `asgi.*` path).

    python -m benchmarks.micro                          # everything (about two minutes)
    python -m benchmarks.micro --quick                  # short batches, 3 repeats (a few seconds)
    python -m benchmarks.micro --filter core.http --filter sse --json /tmp/micro.json
    python -m benchmarks.micro --list
    python -m benchmarks.micro --iterations 1000 --repeat 1 --filter asgi.   # fixed work (benchmarks.instructions)
    python -m benchmarks.micro --profile 2000 --filter "mcpapp-mcpserver modern-json"   # calls per request
"""

from __future__ import annotations

import gc
import itertools
import json
import platform
import statistics
import sys
import time
import timeit
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
from mcp.server.connection import Connection
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)

from asgi_mcp import Tenants
from asgi_mcp._auth.bearer import parse_bearer
from asgi_mcp._core.asgi import HttpRequest
from asgi_mcp._core.cors import CorsPolicy
from asgi_mcp._core.errors import ProtocolError, SecurityRefusal
from asgi_mcp._core.http import (
    Headers,
    accepts,
    check_session_id,
    endpoint_matches,
    era_of,
    is_json_content_type,
)
from asgi_mcp._core.jsonrpc import dumps, parse_body, result_message
from asgi_mcp._core.origin import OriginPolicy
from asgi_mcp._core.session_table import SessionTable
from asgi_mcp._core.sse import encode_event
from asgi_mcp._core.states import SessionState
from asgi_mcp._modern.param_headers import RawHeaders

from .apps import build_app
from .cli import documented_parser
from .load import ACCEPT, LEGACY_VERSION, MODERN_VERSION, PAYLOAD, tools_call_body
from .profile_legacy import request

# -- shared fixtures ----------------------------------------------------------------------------------

SESSION_ID: Final = "Zk3v8Qh0xW2mR9tLpA7cYbN4uE6sJ1dF"  # the shape of secrets.token_urlsafe(24)
TOKEN: Final = "tok-0500-6f1d2c9a8b7e4f30a1b2c3d4e5f60718"
SERVER: Final = ("127.0.0.1", 8000)

# What a client sends on a legacy tools/call, as ASGI delivers it (lowercase names, bytes).
RAW_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", ACCEPT.encode()),
    (b"accept-encoding", b"gzip, deflate"),
    (b"content-type", b"application/json"),
    (b"content-length", b"131"),
    (b"authorization", b"Bearer " + TOKEN.encode()),
    (b"mcp-session-id", SESSION_ID.encode()),
    (b"mcp-protocol-version", LEGACY_VERSION.encode()),
]
# A modern (2026-07-28) tools/call: no session, routing headers instead.
MODERN_RAW_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    *(item for item in RAW_HEADERS if item[0] not in (b"mcp-session-id", b"mcp-protocol-version")),
    (b"mcp-protocol-version", MODERN_VERSION.encode()),
    (b"mcp-method", b"tools/call"),
    (b"mcp-name", b"echo"),
]
# The echo tool's inputSchema as tools/list gives it (benchmarks.apps.make_server): no x-mcp-header.
ECHO_SCHEMA: Final = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
# The header reads the app makes serving one authenticated POST (McpApp._http and _dispatch, legacy).
POST_READS: Final = (
    "host",
    "origin",
    "authorization",
    "mcp-protocol-version",
    "accept",
    "content-type",
    "content-length",
    "mcp-session-id",
)


class CheckFailed(AssertionError):
    """An op did not produce its expected result: timing it would be meaningless."""


def expect(condition: bool, what: str) -> None:
    # Not `assert`: `python -O` must not turn the checks off.
    if not condition:
        raise CheckFailed(what)


def _body(request_id: int, *, modern: bool) -> bytes:
    prefix, suffix = tools_call_body(modern)
    return f"{prefix}{request_id}{suffix}".encode()


# -- op registry ---------------------------------------------------------------------------------------

Thunk = Callable[[], object]


@dataclass(frozen=True)
class CoreOp:
    """`build` sets the op up, runs it once, checks the result, and returns the call to time."""

    name: str
    build: Callable[[], Thunk]


@dataclass(frozen=True)
class AsgiOp:
    name: str
    variant: str  # a `benchmarks.apps` variant
    scenario: str  # legacy-json | legacy-sse | modern-json


CORE_OPS: list[CoreOp] = []


def core_op(name: str) -> Callable[[Callable[[], Thunk]], Callable[[], Thunk]]:
    def register(build: Callable[[], Thunk]) -> Callable[[], Thunk]:
        CORE_OPS.append(CoreOp("core." + name, build))
        return build

    return register


# -- core ops ----------------------------------------------------------------------------------------


@core_op("baseline.noop (the harness's own per-call cost)")
def _noop() -> Thunk:
    def op() -> object:
        return None

    expect(op() is None, "noop")
    return op


@core_op("http.Headers(9 raw headers)")
def _headers_init() -> Thunk:
    def op() -> Headers:
        return Headers(RAW_HEADERS)

    headers = op()
    expect(len(headers) == len(RAW_HEADERS), "one entry per header")
    expect(headers.get("Authorization") == f"Bearer {TOKEN}", "case-insensitive get")
    expect(headers.get("mcp-session-id") == SESSION_ID, "session id")
    return op


@core_op("http.Headers.get x8 (a POST's reads)")
def _headers_get() -> Thunk:
    headers = Headers(RAW_HEADERS)
    get = headers.get

    def op() -> list[Any]:
        return [get(name) for name in POST_READS]

    values = op()
    expect(values[0] == "127.0.0.1:8000" and values[1] is None and values[-1] == SESSION_ID, f"reads: {values}")
    return op


@core_op("http.era_of(legacy 2025-11-25)")
def _era_legacy() -> Thunk:
    def op() -> tuple[str, str]:
        return era_of(LEGACY_VERSION)

    expect(op() == ("legacy", LEGACY_VERSION), "legacy era")
    return op


@core_op("http.era_of(modern 2026-07-28)")
def _era_modern() -> Thunk:
    def op() -> tuple[str, str]:
        return era_of(MODERN_VERSION)

    expect(op() == ("modern", MODERN_VERSION), "modern era")
    try:
        era_of("1999-01-01")
    except ProtocolError as error:
        expect(error.status == 400, "unsupported version is a 400")
    else:
        raise CheckFailed("era_of accepted an unknown version")
    return op


@core_op("http.accepts (lru_cache hit)")
def _accepts_cached() -> Thunk:
    def op() -> tuple[bool, bool]:
        return accepts(ACCEPT)

    expect(op() == (True, True), "json and sse accepted")
    return op


@core_op("http.accepts (uncached parse)")
def _accepts_uncached() -> Thunk:
    parse: Callable[[str | None], tuple[bool, bool]] = accepts.__wrapped__

    def op() -> tuple[bool, bool]:
        return parse(ACCEPT)

    expect(op() == (True, True), "json and sse accepted")
    expect(parse("application/json, text/event-stream;q=0") == (True, False), "q=0 refuses")
    return op


@core_op("http.is_json_content_type")
def _content_type() -> Thunk:
    def op() -> bool:
        return is_json_content_type("application/json")

    expect(op() is True and is_json_content_type("text/plain") is False, "content type")
    return op


@core_op("http.check_session_id")
def _session_id() -> Thunk:
    def op() -> str:
        return check_session_id(SESSION_ID)

    expect(op() == SESSION_ID, "valid id passes")
    try:
        check_session_id("bad id\n")
    except ProtocolError:
        pass
    else:
        raise CheckFailed("a malformed session id passed")
    return op


@core_op("http.endpoint_matches")
def _endpoint() -> Thunk:
    def op() -> bool:
        return endpoint_matches("/mcp", "", "/mcp")

    expect(op() is True and endpoint_matches("/other", "", "/mcp") is False, "path match")
    return op


@core_op("auth.parse_bearer")
def _bearer() -> Thunk:
    header = f"Bearer {TOKEN}"

    def op() -> str | None:
        return parse_bearer(header)

    expect(op() == TOKEN, "token extracted")
    return op


def _parse_op(modern: bool) -> Thunk:
    body = _body(7, modern=modern)

    def op() -> object:
        return parse_body(body)

    message = parse_body(body)
    expect(message.kind == "request" and message.id == 7 and message.method == "tools/call", "classified")
    params = message.params or {}
    expect(params.get("arguments", {}).get("text") == PAYLOAD, "params")
    expect(("_meta" in params) is modern, "_meta only on modern")
    return op


@core_op("jsonrpc.parse_body(tools/call, legacy)")
def _parse_legacy() -> Thunk:
    return _parse_op(False)


@core_op("jsonrpc.parse_body(tools/call, modern _meta)")
def _parse_modern() -> Thunk:
    return _parse_op(True)


TOOL_RESULT: Final = {"content": [{"type": "text", "text": PAYLOAD}], "isError": False}


@core_op("jsonrpc.dumps(tools/call result)")
def _dumps() -> Thunk:
    message = result_message(7, TOOL_RESULT)

    def op() -> str:
        return dumps(message)

    expect(json.loads(op()) == message and "\n" not in op(), "compact round trip")
    return op


@core_op("sse.encode_event(message)")
def _sse() -> Thunk:
    data = dumps(result_message(7, TOOL_RESULT))

    def op() -> bytes:
        return encode_event(data)

    expect(op() == f"event: message\ndata: {data}\n\n".encode(), "one event")
    return op


@core_op("sse.encode_event(message, event id)")
def _sse_id() -> Thunk:
    data = dumps(result_message(7, TOOL_RESULT))
    event_id = f"{SESSION_ID}/17"

    def op() -> bytes:
        return encode_event(data, event_id=event_id)

    expect(op() == f"id: {event_id}\nevent: message\ndata: {data}\n\n".encode(), "one event with id")
    return op


# The SDK helpers McpApp's modern endpoint runs on every tools/call before the kernel (_modern.post).


def _modern_request() -> tuple[HttpRequest, dict[str, Any]]:
    headers = Headers(MODERN_RAW_HEADERS)
    message = parse_body(_body(7, modern=True))
    return HttpRequest("POST", "/mcp", headers, {"type": "http"}), message.raw


@core_op("modern.find_duplicated_routing_header (SDK)")
def _modern_duplicates() -> Thunk:
    request, _ = _modern_request()
    headers = request.headers

    def op() -> str | None:
        return find_duplicated_routing_header(headers.raw_items())

    expect(op() is None, "no duplicate")
    twice = Headers([*MODERN_RAW_HEADERS, (b"mcp-method", b"tools/list")])
    expect(find_duplicated_routing_header(twice.raw_items()) is not None, "a duplicate is found")
    return op


@core_op("modern.classify_inbound_request (SDK)")
def _modern_classify() -> Thunk:
    request, raw = _modern_request()
    headers = request.headers

    def op() -> object:
        return classify_inbound_request(raw, headers=headers)

    verdict = op()
    expect(not isinstance(verdict, InboundLadderRejection), f"accepted: {verdict}")
    expect(getattr(verdict, "protocol_version", None) == MODERN_VERSION, "modern route")
    return op


@core_op("modern.validate_mcp_param_headers (SDK, echo schema)")
def _modern_param_headers() -> Thunk:
    request, raw = _modern_request()
    arguments = raw["params"]["arguments"]
    headers = RawHeaders(request)

    def op() -> object:
        return validate_mcp_param_headers(ECHO_SCHEMA, arguments, headers)

    expect(op() is None, "nothing to disagree")
    annotated = {"type": "object", "properties": {"text": {"type": "string", "x-mcp-header": "Text"}}}
    expect(validate_mcp_param_headers(annotated, arguments, headers) is not None, "a missing header is refused")
    return op


@core_op("modern.Connection.from_envelope (SDK)")
def _modern_connection() -> Thunk:
    request, raw = _modern_request()
    verdict = classify_inbound_request(raw, headers=request.headers)
    expect(not isinstance(verdict, InboundLadderRejection), "accepted")
    assert not isinstance(verdict, InboundLadderRejection)  # for the type checker

    def op() -> Connection:
        return Connection.from_envelope(verdict.protocol_version, verdict.client_info, verdict.client_capabilities)

    expect(op().protocol_version == MODERN_VERSION, "a connection on the modern version")
    return op


def _filled_table(n: int) -> SessionTable[object]:
    table: SessionTable[object] = SessionTable(max_sessions=10_000, idle_timeout=1800.0)
    for i in range(n):
        entry = table.open(f"{SESSION_ID}{i:05d}", owner="", tenant_id=None, value=object(), now=0.0)
        table.activate(entry)
        table.end(entry, 0.0)
    return table


@core_op("registry.open+activate+remove (1000 sessions)")
def _registry_cycle() -> Thunk:
    table = _filled_table(1000)
    value = object()

    def op() -> object:
        entry = table.open(SESSION_ID, owner="", tenant_id=None, value=value, now=1.0)
        table.activate(entry)
        return table.remove(SESSION_ID)

    entry = table.open(SESSION_ID, owner="", tenant_id=None, value=value, now=1.0)
    table.activate(entry)
    expect(table.lookup(SESSION_ID, "") is entry, "admitted and addressable")
    removed = table.remove(SESSION_ID)
    expect(removed is entry and entry.state is SessionState.CLOSED, "removed and closed")
    expect(op() is not None and len(table) == 1000 and table.get(SESSION_ID) is None, "table back to 1000")
    return op


@core_op("registry.lookup (1000 sessions)")
def _registry_lookup() -> Thunk:
    table = _filled_table(1000)
    session_id = f"{SESSION_ID}00500"

    def op() -> object:
        return table.lookup(session_id, "")

    entry = op()
    expect(entry is not None and entry is table.get(session_id), "found")
    expect(table.lookup(session_id, "someone else") is None, "owner checked")
    return op


@core_op("registry.begin+end (one exchange)")
def _registry_exchange() -> Thunk:
    table = _filled_table(1000)
    entry = table.lookup(f"{SESSION_ID}00500", "")
    expect(entry is not None, "found")
    assert entry is not None  # for the type checker

    def op() -> bool:
        table.begin(entry)
        return table.end(entry, 2.0)

    expect(op() is False and entry.in_flight == 0 and entry.idle_since == 2.0, "idle again")
    return op


def _tenants(n: int) -> Tenants:
    def factory() -> None:
        return None

    return Tenants({f"tok-{i:04d}-6f1d2c9a8b7e4f30a1b2c3d4e5f60718": factory for i in range(n)})


@core_op("tenancy.Tenants.lookup (hit, 1000 tenants)")
def _tenants_hit() -> Thunk:
    tenants = _tenants(1000)

    def op() -> object:
        return tenants.lookup(TOKEN)

    tenant = op()
    expect(len(tenants) == 1000 and tenant is not None and tenant in list(tenants), "tenant found")
    return op


@core_op("tenancy.Tenants.lookup (miss, 1000 tenants)")
def _tenants_miss() -> Thunk:
    tenants = _tenants(1000)

    def op() -> object:
        return tenants.lookup("tok-9999-not-registered")

    expect(op() is None, "unknown token")
    return op


def _refuses(check: Callable[[], None], status: int) -> bool:
    try:
        check()
    except SecurityRefusal as error:
        return error.status == status
    return False


@core_op("security.OriginPolicy.check (loopback bind, no Origin)")
def _origin_default() -> Thunk:
    policy = OriginPolicy(None, None)

    def op() -> None:
        policy.check("127.0.0.1:8000", None, SERVER)

    op()
    expect(_refuses(lambda: policy.check("evil.example:8000", None, SERVER), 421), "rebound Host refused")
    return op


@core_op("security.OriginPolicy.check (loopback bind, loopback Origin)")
def _origin_loopback() -> Thunk:
    policy = OriginPolicy(None, None)

    def op() -> None:
        policy.check("localhost:8000", "http://localhost:5173", SERVER)

    op()
    expect(
        _refuses(lambda: policy.check("localhost:8000", "https://evil.example", SERVER), 403), "foreign Origin refused"
    )
    return op


@core_op("security.OriginPolicy.check (allow-lists, public bind)")
def _origin_lists() -> Thunk:
    policy = OriginPolicy(
        ["api.example.com", "mcp.example.com:*"], ["https://app.example.com", "https://inspector.example.com"]
    )
    server = ("10.0.0.5", 443)

    def op() -> None:
        policy.check("mcp.example.com:443", "https://inspector.example.com", server)

    op()
    expect(_refuses(lambda: policy.check("other.example", None, server), 421), "unlisted Host refused")
    return op


@core_op("cors.CorsPolicy.allows")
def _cors_allows() -> Thunk:
    policy = CorsPolicy(["https://app.example.com", "https://inspector.example.com"])

    def op() -> bool:
        return policy.allows("https://inspector.example.com")

    expect(op() is True and policy.allows("https://evil.example") is False, "allows")
    return op


@core_op("cors.CorsPolicy.preflight_headers")
def _cors_preflight() -> Thunk:
    policy = CorsPolicy(["https://app.example.com"])
    requested = "content-type, authorization, mcp-protocol-version, mcp-session-id"

    def op() -> object:
        return policy.preflight_headers("https://app.example.com", requested)

    answer = op()
    expect(isinstance(answer, list) and (b"vary", b"Origin") in answer, "preflight answer")
    expect(policy.preflight_headers("https://app.example.com", "x-custom") is None, "unknown header refused")
    return op


# -- ASGI ops ----------------------------------------------------------------------------------------

ASGI_OPS: Final[list[AsgiOp]] = [
    AsgiOp("asgi.floor (harness + trivial app)", "floor", "legacy-json"),
    AsgiOp("asgi.mcpapp legacy-json tools/call", "mcpapp-json", "legacy-json"),
    AsgiOp("asgi.mcpapp modern-json tools/call", "mcpapp-json", "modern-json"),
    AsgiOp("asgi.mcpapp legacy-sse tools/call", "mcpapp-sse", "legacy-sse"),
    AsgiOp("asgi.mcpapp-limited legacy-json tools/call", "mcpapp-json-limited", "legacy-json"),
    AsgiOp("asgi.mcpapp-limited modern-json tools/call", "mcpapp-json-limited", "modern-json"),
    AsgiOp("asgi.sdk legacy-json tools/call", "sdk-json", "legacy-json"),
    AsgiOp("asgi.sdk modern-json tools/call", "sdk-json", "modern-json"),
    AsgiOp("asgi.sdk legacy-sse tools/call", "sdk-sse", "legacy-sse"),
    # The same echo as an MCPServer tool (`benchmarks.apps.make_mcpserver`), as the README shows users.
    AsgiOp("asgi.mcpapp-mcpserver legacy-json tools/call", "mcpapp-json-mcpserver", "legacy-json"),
    AsgiOp("asgi.mcpapp-mcpserver modern-json tools/call", "mcpapp-json-mcpserver", "modern-json"),
    AsgiOp("asgi.sdk-mcpserver legacy-json tools/call", "sdk-json-mcpserver", "legacy-json"),
    AsgiOp("asgi.sdk-mcpserver modern-json tools/call", "sdk-json-mcpserver", "modern-json"),
]

Response = tuple[int, dict[bytes, bytes], bytes]


@asynccontextmanager
async def running(app: Any) -> AsyncGenerator[None, None]:
    """The app between lifespan startup and shutdown (as a server runs it)."""
    to_app, app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    async with anyio.create_task_group() as tg:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        tg.start_soon(app, scope, app_receive.receive, app_send.send)
        await to_app.send({"type": "lifespan.startup"})
        started = await from_app.receive()
        expect(started["type"] == "lifespan.startup.complete", f"lifespan startup: {started}")
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await to_app.send({"type": "lifespan.shutdown"})
                await from_app.receive()
            tg.cancel_scope.cancel()


async def open_scenario(app: Any, scenario: str) -> list[tuple[bytes, bytes]]:
    """Request headers for a scenario; legacy: initialize + notifications/initialized first."""
    headers = [(b"content-type", b"application/json"), (b"accept", ACCEPT.encode())]
    if scenario.startswith("modern"):
        return [
            *headers,
            (b"mcp-protocol-version", MODERN_VERSION.encode()),
            (b"mcp-method", b"tools/call"),
            (b"mcp-name", b"echo"),
        ]
    headers.append((b"mcp-protocol-version", LEGACY_VERSION.encode()))
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "m", "version": "1"}},
    }
    status, answer_headers, body = await request(app, headers, json.dumps(init).encode())
    expect(status == 200, f"initialize: {status} {body[:200]!r}")
    session_id = answer_headers.get(b"mcp-session-id")
    if session_id is not None:  # the floor app has no sessions
        headers.append((b"mcp-session-id", session_id))
    status, _, _ = await request(app, headers, b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    expect(status in (200, 202), f"notifications/initialized: {status}")
    return headers


def check_answer(response: Response, *, request_id: int | None, sse: bool) -> None:
    """A successful echo result; with `request_id`, decoded in full and matched to the request."""
    status, headers, body = response
    expect(status == 200, f"status {status}: {body[:200]!r}")
    expect(b'"result"' in body and PAYLOAD.encode() in body and b'"error"' not in body, f"answer {body[:200]!r}")
    if request_id is None:
        return
    content_type = headers.get(b"content-type", b"")
    expect(content_type.startswith(b"text/event-stream" if sse else b"application/json"), f"type {content_type!r}")
    if sse:
        data = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ") and line[6:].strip()]
        expect(len(data) == 1, f"one SSE message: {body[:300]!r}")
        body = data[0]
    message = json.loads(body)
    expect(message.get("id") == request_id, f"id {message.get('id')!r}, sent {request_id}")
    expect(message["result"]["content"][0]["text"] == PAYLOAD and not message["result"].get("isError"), "echo")


# -- timing ------------------------------------------------------------------------------------------


@dataclass
class Settings:
    min_time: float
    repeat: int
    backend: str
    gc_on: bool
    profile: int = 0  # > 0: instead of timing, count calls over this many requests (cProfile)
    profile_sort: str = "calls"  # or "cumulative"
    iterations: int = 0  # > 0: every batch is exactly this many calls (no calibration; see --iterations)


@dataclass
class Result:
    name: str
    number: int  # calls per batch
    per_call: list[float] = field(default_factory=lambda: list[float]())  # seconds per call, one per batch

    @property
    def min(self) -> float:
        return min(self.per_call)

    @property
    def median(self) -> float:
        return statistics.median(self.per_call)


def _batch_sizes() -> Iterator[int]:
    """1, 2, 5, 10, 20, 50, ... as `timeit.Timer.autorange` tries them."""
    for power in itertools.count():
        for base in (1, 2, 5):
            yield base * 10**power


def time_core(op: CoreOp, settings: Settings) -> Result:
    thunk = op.build()
    timer = timeit.Timer(thunk)  # timeit turns the garbage collector off while it times
    number = settings.iterations or 1
    for number in () if settings.iterations else _batch_sizes():
        if timer.timeit(number) >= settings.min_time:
            break
    result = Result(op.name, number)
    result.per_call = [t / number for t in timer.repeat(repeat=settings.repeat, number=number)]
    return result


@contextmanager
def gc_state(enabled: bool) -> Generator[None, None, None]:
    was_enabled = gc.isenabled()
    if enabled:
        gc.enable()
    else:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


async def time_asgi(app: Any, op: AsgiOp, settings: Settings) -> Result:
    modern = op.scenario.startswith("modern")
    sse = op.scenario.endswith("-sse")
    headers = await open_scenario(app, op.scenario)
    ids = itertools.count(1)  # a legacy session never sees an id twice

    async def call() -> tuple[int, Response]:
        request_id = next(ids)
        return request_id, await request(app, headers, _body(request_id, modern=modern))

    request_id, response = await call()
    if op.variant != "floor":  # the floor answers a fixed body: its id is not the request's
        check_answer(response, request_id=request_id, sse=sse)
    else:
        check_answer(response, request_id=None, sse=False)

    async def batch(number: int) -> float:
        last: Response | None = None
        started = time.perf_counter()
        for _ in range(number):
            _, last = await call()
        elapsed = time.perf_counter() - started
        assert last is not None
        check_answer(last, request_id=None, sse=sse)  # cheap: status and body markers
        return elapsed

    with gc_state(settings.gc_on):
        number = settings.iterations or 1
        for number in () if settings.iterations else _batch_sizes():
            if await batch(number) >= settings.min_time:
                break
        result = Result(op.name, number)
        for _ in range(settings.repeat):
            result.per_call.append(await batch(number) / number)
    return result


async def profile_asgi(app: Any, op: AsgiOp, calls: int, top: int = 40, sort: str = "calls") -> str:
    """Function calls per request over `calls` requests (cProfile), the most frequent first.

    Call counts do not depend on how busy the machine is, so they show what a request still does
    (and what a change took off it) where timings would be noise; cumulative time is printed too.
    """
    import cProfile
    import pstats

    modern = op.scenario.startswith("modern")
    sse = op.scenario.endswith("-sse")
    headers = await open_scenario(app, op.scenario)
    ids = itertools.count(1)
    for _ in range(20):  # first-use caches out of the way
        check_answer(await request(app, headers, _body(next(ids), modern=modern)), request_id=None, sse=sse)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        await request(app, headers, _body(next(ids), modern=modern))
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    column = 1 if sort == "calls" else 3  # (primitive calls, calls, own time, cumulative time, callers)
    rows = sorted(stats.items(), key=lambda item: (-item[1][column], item[0]))
    total = sum(entry[1] for _, entry in rows)
    lines = [
        f"{op.name}: {total / calls:.0f} function calls per request over {calls}",
        "calls/req  cum µs/req  function",
    ]
    for (filename, line, function), (_, ncalls, _, cumtime, _) in rows[:top]:
        where = f"{_short(filename)}:{line}({function})" if line else function
        lines.append(f"{ncalls / calls:9.2f}  {cumtime / calls * 1e6:9.1f}  {where}")
    return "\n".join(lines)


def _short(filename: str) -> str:
    """A profiled file as `package/module.py` (site-packages and the checkout's root cut off)."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "asgi_mcp", "benchmarks"):
        if anchor in parts:
            index = parts.index(anchor)
            return "/".join(parts[index + 1 :] if anchor == "site-packages" else parts[index:])
    return Path(filename).name


def run_profiles(ops: list[AsgiOp], settings: Settings) -> None:
    for op in ops:

        async def one(op: AsgiOp = op) -> None:
            async with running(app := build_app(op.variant)):
                print(await profile_asgi(app, op, settings.profile, sort=settings.profile_sort), flush=True)

        backend = "asyncio" if settings.backend == "uvloop" else settings.backend
        options: dict[str, Any] = {"use_uvloop": True} if settings.backend == "uvloop" else {}
        anyio.run(one, backend=backend, backend_options=options)


def run_asgi(ops: list[AsgiOp], settings: Settings, report: Callable[[Result], None]) -> list[Result]:
    """One lifespan per app variant (in order of first use); its scenarios run one after the other."""
    results: dict[str, Result] = {}
    variants = list(dict.fromkeys(op.variant for op in ops))

    async def run_variant(variant: str) -> None:
        app = build_app(variant)
        async with running(app):
            for op in ops:
                if op.variant == variant:
                    results[op.name] = await time_asgi(app, op, settings)
                    report(results[op.name])

    for variant in variants:
        backend = "asyncio" if settings.backend == "uvloop" else settings.backend
        options: dict[str, Any] = {"use_uvloop": True} if settings.backend == "uvloop" else {}
        anyio.run(run_variant, variant, backend=backend, backend_options=options)
    return [results[op.name] for op in ops]


# -- output ------------------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.1f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.2f} ms"


def table_header(width: int) -> str:
    return f"{'op':<{width}} {'min':>10} {'median':>10}  {'calls x batches':>15}"


def table_row(result: Result, width: int) -> str:
    runs = f"{result.number} x {len(result.per_call)}"
    return f"{result.name:<{width}} {fmt(result.min):>10} {fmt(result.median):>10}  {runs:>15}"


def selected(name: str, filters: list[str]) -> bool:
    return not filters or any(f.lower() in name.lower() for f in filters)


def main(argv: list[str] | None = None) -> None:
    parser = documented_parser("benchmarks.micro", __doc__)
    parser.add_argument(
        "--filter", action="append", default=[], metavar="SUBSTRING", help="only ops whose name has it (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="0.02 s batches, 3 repeats (default 0.2 s, 7)")
    parser.add_argument("--min-time", type=float, help="seconds one timed batch takes at least")
    parser.add_argument("--repeat", type=int, help="timed batches per op (min and median over them)")
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default="asyncio", help="for asgi.* ops")
    parser.add_argument("--no-gc", action="store_true", help="garbage collector off for asgi.* ops too")
    parser.add_argument(
        "--iterations",
        type=int,
        default=0,
        metavar="N",
        help="every batch exactly N calls, no calibration (a fixed amount of work: for counting instructions)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results there")
    parser.add_argument("--list", action="store_true", help="list the ops (after --filter) and exit")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="asgi.* ops only: cProfile N requests and print function calls per request instead of timing",
    )
    parser.add_argument(
        "--profile-sort", choices=("calls", "cumulative"), default="calls", help="order of the --profile listing"
    )
    args = parser.parse_args(argv)

    core = [op for op in CORE_OPS if selected(op.name, args.filter)]
    asgi = [op for op in ASGI_OPS if selected(op.name, args.filter)]
    if args.list:
        for name in [op.name for op in core] + [op.name for op in asgi]:
            print(name)
        return
    if not core and not asgi:
        raise SystemExit(f"no op matches {args.filter}; see --list")
    if args.profile > 0:
        if not asgi:
            raise SystemExit("--profile profiles asgi.* ops; none matches the filter")
        profiling = Settings(0.0, 0, args.backend, True, profile=args.profile, profile_sort=args.profile_sort)
        run_profiles(asgi, profiling)
        return
    settings = Settings(
        min_time=args.min_time if args.min_time is not None else (0.02 if args.quick else 0.2),
        repeat=args.repeat if args.repeat is not None else (3 if args.quick else 7),
        backend=args.backend,
        gc_on=not args.no_gc,
        iterations=args.iterations,
    )
    if settings.min_time <= 0 or settings.repeat < 1 or settings.iterations < 0:
        raise SystemExit("--min-time must be positive, --repeat at least 1 and --iterations not negative")

    batches = f"batches of >= {settings.min_time:g} s"
    if settings.iterations:
        batches = f"batches of {settings.iterations} calls"
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), {platform.machine()}; "
        f"{batches} x {settings.repeat}; asgi.* on {settings.backend}, "
        f"gc {'on' if settings.gc_on else 'off'}; times per call"
    )
    width = max(len(name) for name in [*(op.name for op in core), *(op.name for op in asgi)])
    print(table_header(width))
    print("-" * len(table_header(width)))

    def report(result: Result) -> None:
        print(table_row(result, width), flush=True)

    results: list[Result] = []
    for op in core:
        results.append(time_core(op, settings))
        report(results[-1])
    if asgi:
        results.extend(run_asgi(asgi, settings, report))

    if args.json is not None:
        document = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "argv": sys.argv[1:] if argv is None else argv,
            "settings": asdict(settings),
            "results": [
                {"op": r.name, "min_s": r.min, "median_s": r.median, "number": r.number, "per_call_s": r.per_call}
                for r in results
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
