"""Logging: stdlib loggers under `asgi_mcp.*`, a `NullHandler` and nothing else configured by the
library, exactly one line per refused request with structured `extra` fields, and never a raw token
(tenants mode, bad tokens included); in memory on asyncio and Trio."""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import anyio
import httpx
import pytest

from asgi_mcp import McpApp, Tenants, create_per_bearer_server
from tests.kit.http import headers as http_headers
from tests.kit.http import open_session
from tests.kit.mcp_servers import ALL_TOKENS, TOKEN_A, TOKEN_B, TOKEN_C, UNKNOWN_TOKEN, factory_of
from tests.kit.memory import AsgiClient, Response, TokenClient, serving
from tests.kit.messages import LEGACY, MODERN, call_tool, initialize, modern

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0
ROOT: Final = Path(__file__).resolve().parents[2]
CORS_ORIGIN: Final = "https://app.example.com"
# The attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = set(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {"message", "asctime"}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        taken, self.records = self.records, []
        return taken


@pytest.fixture
def captured() -> Iterator[Capture]:
    """Every record of `asgi_mcp.*`, at every level, straight from the library's logger."""
    logger = logging.getLogger("asgi_mcp")
    handler = Capture()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


def tenants_app(**options: Any) -> tuple[McpApp, Tenants]:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    tenants.add(TOKEN_B, factory_of("bravo"), label="bravo")
    tenants.add(TOKEN_C, factory_of("charlie"))  # no label: known by a digest prefix
    return McpApp(tenants=tenants, **options), tenants


# -- the library's own configuration --------------------------------------------------------------


def test_the_library_adds_only_a_null_handler() -> None:
    import asgi_mcp  # noqa: F401 - the import is what configures the logger

    root_logger = logging.getLogger("asgi_mcp")
    handlers = [h for h in root_logger.handlers if not isinstance(h, Capture)]
    assert handlers
    assert all(type(h) is logging.NullHandler for h in handlers), handlers
    assert root_logger.level == logging.NOTSET  # the application decides the level
    assert root_logger.propagate
    for name in ("asgi_mcp.http", "asgi_mcp.dispatch", "asgi_mcp.tenancy", "asgi_mcp.auth"):
        child = logging.getLogger(name)
        assert child.handlers == []
        assert child.propagate


# A fresh interpreter with logging left unconfigured serves one refused request of each level: a
# DNS-rebinding refusal (WARNING, which Python's last-resort handler would print) and a 401 (INFO).
# The low-level server: the SDK's `MCPServer()` itself calls `logging.basicConfig` (INFO, stderr).
_UNCONFIGURED_RUN: Final = """
import logging, sys
import anyio
from mcp.server.lowlevel.server import Server
from asgi_mcp import McpApp, StaticTokenVerifier
from tests.kit.memory import AsgiClient
from tests.kit.memory import serving
from tests.kit.messages import initialize

backend, strip_null_handler = sys.argv[1], sys.argv[2] == "strip"
if strip_null_handler:
    logging.getLogger("asgi_mcp").handlers.clear()

async def main():
    app = McpApp(Server("quiet"), token_verifier=StaticTokenVerifier({"tok-123456": {"client_id": "c"}}))
    async with serving(app) as client:
        for headers in ({"origin": "https://evil.example"}, {}):
            response = await client.post(initialize(0), headers=headers)
            await response.read()
            print(response.status)

anyio.run(main, backend=backend)
"""


@pytest.mark.parametrize("strip", [False, True], ids=["as-shipped", "null-handler-removed"])
async def test_nothing_is_printed_without_logging_configuration(anyio_backend: str, strip: bool) -> None:
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-c", _UNCONFIGURED_RUN, anyio_backend, "strip" if strip else "keep"],
            cwd=ROOT,
            check=False,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    assert stdout.split() == ["403", "401"]
    if strip:
        # The control: without the NullHandler, Python's last resort prints the WARNING.
        assert "refused POST /mcp" in stderr, stderr
    else:
        assert stderr == ""


# -- one structured line per refused request ------------------------------------------------------


@dataclass
class Refusal:
    status: int
    level: int
    method: str
    reason: str  # a substring of the `reason` field
    tenant_id: str | None = None
    session_id: str | None = None


Scenario = Callable[[AsgiClient, dict[str, str]], Awaitable[Response]]


async def _post(client: AsgiClient, token: str | None, **headers: str) -> Response:
    auth = {"authorization": f"Bearer {token}"} if token is not None else {}
    return await client.post(initialize(0), headers={**auth, **headers})


async def _no_token(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await _post(client, None)


async def _unknown_token(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await _post(client, UNKNOWN_TOKEN)


async def _basic_auth(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await client.post(initialize(0), headers={"authorization": f"Basic {TOKEN_A}"})


async def _wrong_content_type(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await client.request(
        "POST",
        headers={"authorization": f"Bearer {TOKEN_A}", "content-type": "text/plain", "accept": "application/json"},
        body=b"{}",
    )


async def _unknown_session(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await TokenClient(client, TOKEN_A).post(call_tool(1, "whoami"), session_id="no-such-session")


async def _another_tenants_session(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await TokenClient(client, TOKEN_A).post(call_tool(1, "whoami"), session_id=ids["bravo"])


async def _unlabelled_tenant_unknown_session(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await TokenClient(client, TOKEN_C).delete("gone-session")


async def _get_without_session(client: AsgiClient, ids: dict[str, str]) -> Response:
    headers = {"authorization": f"Bearer {TOKEN_A}", "accept": "text/event-stream", "mcp-protocol-version": LEGACY}
    return await client.request("GET", headers=headers)


async def _header_mismatch(client: AsgiClient, ids: dict[str, str]) -> Response:
    body, headers = modern(1, "tools/call", {"name": "whoami", "arguments": {}})
    headers["mcp-name"] = "alpha_only"
    return await client.post(body, headers={**headers, "authorization": f"Bearer {TOKEN_A}"})


async def _unsupported_version(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await _post(client, TOKEN_A, **{"mcp-protocol-version": "1999-01-01"})


async def _foreign_origin(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await _post(client, TOKEN_A, origin="https://evil.example.net")


async def _foreign_host(client: AsgiClient, ids: dict[str, str]) -> Response:
    return await _post(client, TOKEN_A, host="attacker.example:8000")


async def _refused_preflight(client: AsgiClient, ids: dict[str, str]) -> Response:
    headers = {
        "origin": CORS_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, x-secret",
    }
    return await client.request("OPTIONS", headers=headers)


CASES: Final[dict[str, tuple[Scenario, Callable[[dict[str, str]], Refusal]]]] = {
    "no-token": (_no_token, lambda ids: Refusal(401, logging.INFO, "POST", "no credentials")),
    "unknown-token": (_unknown_token, lambda ids: Refusal(401, logging.INFO, "POST", "invalid_token")),
    "basic-auth": (_basic_auth, lambda ids: Refusal(401, logging.INFO, "POST", "no credentials")),
    "content-type": (
        _wrong_content_type,
        lambda ids: Refusal(415, logging.INFO, "POST", "Content-Type", tenant_id="alpha"),
    ),
    "unknown-session": (
        _unknown_session,
        lambda ids: Refusal(404, logging.INFO, "POST", "Session not found", "alpha", "no-such-session"),
    ),
    "another-tenants-session": (
        _another_tenants_session,
        lambda ids: Refusal(404, logging.INFO, "POST", "Session not found", "alpha", ids["bravo"]),
    ),
    "unlabelled-tenant": (
        _unlabelled_tenant_unknown_session,
        lambda ids: Refusal(404, logging.INFO, "DELETE", "Session not found", ids["charlie-id"], "gone-session"),
    ),
    "get-without-session": (
        _get_without_session,
        lambda ids: Refusal(400, logging.INFO, "GET", "missing session id", tenant_id="alpha"),
    ),
    "header-mismatch": (_header_mismatch, lambda ids: Refusal(400, logging.INFO, "POST", "", tenant_id="alpha")),
    "unsupported-version": (
        _unsupported_version,
        lambda ids: Refusal(400, logging.INFO, "POST", "unsupported MCP-Protocol-Version", tenant_id="alpha"),
    ),
    "dns-rebinding-origin": (_foreign_origin, lambda ids: Refusal(403, logging.WARNING, "POST", "Origin")),
    "dns-rebinding-host": (_foreign_host, lambda ids: Refusal(421, logging.WARNING, "POST", "Host")),
    "cors-preflight": (_refused_preflight, lambda ids: Refusal(403, logging.INFO, "OPTIONS", "request header")),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_one_structured_line_per_refused_request(case: str, captured: Capture) -> None:
    scenario, expected_of = CASES[case]
    app, tenants = tenants_app(cors_origins=[CORS_ORIGIN])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            ids = {"bravo": await TokenClient(client, TOKEN_B).open_session()}
            ids["charlie-id"] = next(t.tenant_id for t in tenants if t.tenant_id not in ("alpha", "bravo"))
            captured.take()
            response = await scenario(client, ids)
            await response.read()
            records = captured.take()
    expected = expected_of(ids)
    assert response.status == expected.status, response.body
    # The refusal's audit record goes to its own logger (see test_tenant_ops); one line here.
    audits = [r for r in records if r.name == "asgi_mcp.audit"]
    records = [r for r in records if r.name != "asgi_mcp.audit"]
    assert len(audits) == (0 if case == "cors-preflight" else 1), [r.getMessage() for r in audits]
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    assert record.name == "asgi_mcp.http"
    assert record.levelno == expected.level, record.getMessage()
    fields = extras(record)
    assert fields["status"] == expected.status
    assert fields["method"] == expected.method
    assert expected.reason in fields["reason"], fields
    assert fields.get("tenant_id") == expected.tenant_id, fields
    assert fields.get("session_id") == expected.session_id, fields
    message = record.getMessage()
    assert str(expected.status) in message
    assert expected.method in message
    assert fields["reason"] in message
    _assert_no_token([record])


async def test_a_served_session_logs_nothing(captured: Capture) -> None:
    app, _ = tenants_app()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            alpha = TokenClient(client, TOKEN_A)
            session_id = await alpha.open_session()
            answer = await alpha.call(session_id, call_tool(1, "whoami"))
            assert answer["result"]["content"][0]["text"] == "alpha"
            response = await alpha.modern(2, "tools/call", {"name": "whoami", "arguments": {}})
            await response.read()
            assert response.status == 200
            deleted = await alpha.delete(session_id)
            await deleted.read()
            assert deleted.status == 200
    logged = [r for r in captured.records if r.levelno >= logging.INFO]
    # Only the audit records of its two tool calls.
    assert [r.getMessage() for r in logged if r.name != "asgi_mcp.audit"] == []
    assert [r.audit["tool"] for r in logged] == ["whoami", "whoami"]


# -- tokens never reach a log ---------------------------------------------------------------------


def _assert_no_token(records: list[logging.LogRecord]) -> None:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    for record in records:
        text = formatter.format(record) + " " + json.dumps(extras(record), default=repr) + repr(record.args)
        for token in ALL_TOKENS:
            assert token not in text, text


async def test_no_raw_token_in_any_record(captured: Capture) -> None:
    """Every kind of credential mistake, in tenants mode, on every route, and a token revoked mid-session."""
    app, tenants = tenants_app(cors_origins=[CORS_ORIGIN])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            alpha, bravo = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            session_a = await alpha.open_session()
            session_b = await bravo.open_session()
            responses: list[Response] = []
            for token in ALL_TOKENS:
                for authorization in (
                    f"Bearer {token}",
                    f"bearer {token}",
                    f"Bearer {token} trailing",
                    f"Bearer  {token}",
                    f"Basic {token}",
                    token,
                    f"Bearer {token}x",
                    f"Bearer {token[:-1]}",
                ):
                    headers = {"authorization": authorization}
                    responses.append(await client.post(initialize(0), headers=headers))
                    responses.append(await client.post(call_tool(1, "whoami"), session_id=session_b, headers=headers))
                    responses.append(await client.post(b"{not json", headers=headers))
                    responses.append(await client.request("GET", headers={**headers, "accept": "text/event-stream"}))
                    responses.append(await client.request("DELETE", headers={**headers, "mcp-session-id": "x"}))
                    responses.append(await client.request("PUT", headers=headers))
                    body, modern_headers = modern(1, "tools/call", {"name": "nope", "arguments": {}})
                    responses.append(
                        await client.post(body, headers={**modern_headers, **headers, "mcp-name": "other"})
                    )
                    responses.append(
                        await client.post(initialize(0), headers={**headers, "origin": "https://evil.example.net"})
                    )
            # Revoked while its session lives: the next request is refused with an unknown token.
            tenants.remove(TOKEN_A)
            responses.append(await alpha.post(call_tool(1, "whoami"), session_id=session_a))
            for response in responses:
                await response.read()
    statuses = {response.status for response in responses}
    assert {400, 401, 403, 404, 405} <= statuses, statuses
    refusals = [r for r in captured.records if r.name == "asgi_mcp.http"]
    assert len(refusals) == sum(response.status >= 400 for response in responses)  # one each
    assert all(r.levelno in (logging.INFO, logging.WARNING) for r in refusals)
    _assert_no_token(captured.records)


async def test_modern_era_refusals_name_the_tenant(captured: Capture) -> None:
    app, _ = tenants_app()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            body, headers = modern(7, "tools/call", {"name": "whoami", "arguments": {}})
            headers["mcp-protocol-version"] = MODERN
            response = await client.post(
                body, headers={**headers, "authorization": f"Bearer {TOKEN_B}"}, accept="text/plain"
            )
            await response.read()
    assert response.status == 406
    [record] = [r for r in captured.records if r.name == "asgi_mcp.http"]
    assert extras(record)["tenant_id"] == "bravo"
    assert "session_id" not in extras(record)


# -- the one-call server's records hold no secret in any attribute ---------------------------------

COOKIE_SECRET: Final = "ck-sess-5Hn8Qe2Wr4Ty"
PROXY_SECRET: Final = "px-cred-9Lk3Mj7Nb1Vc"
ENV_SECRET: Final = "env-key-6Gf2Ds8Aq4Zx"
SECRETS: Final = (*ALL_TOKENS, COOKIE_SECRET, PROXY_SECRET, ENV_SECRET)
_ACCESS_LINE: Final = r'127\.0\.0\.1:\d+ "(POST|DELETE) /mcp HTTP/1\.1" (\d{3} (\d+|-)|- -)'


@pytest.fixture
def every_record() -> Iterator[Capture]:
    """Every record of every logger (the SDK's, hypercorn's, ours), at every level, at the root."""
    root = logging.getLogger()
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _texts(value: object, seen: set[int], depth: int = 0) -> Iterator[str]:
    """Every piece of text reachable from `value`: what a handler shipping a record's attributes
    (args, extra fields, exc_info, ...) could send, walked through containers and object fields."""
    if value is None or isinstance(value, (bool, int, float)) or id(value) in seen or depth > 8:
        return
    seen.add(id(value))
    if isinstance(value, str):
        yield value
    elif isinstance(value, (bytes, bytearray)):
        yield bytes(value).decode("latin-1")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key, seen, depth + 1)
            yield from _texts(item, seen, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _texts(item, seen, depth + 1)
    elif isinstance(value, BaseException):
        yield "".join(traceback.format_exception(type(value), value, value.__traceback__))
        yield from _texts(value.args, seen, depth + 1)
        yield from _texts(vars(value), seen, depth + 1)
    elif isinstance(value, TracebackType):
        yield "".join(traceback.format_tb(value))
    else:
        yield repr(value)
        if hasattr(value, "__dict__"):
            yield from _texts(vars(value), seen, depth + 1)


def _assert_no_secret_anywhere(records: list[logging.LogRecord]) -> None:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    for record in records:
        texts = [formatter.format(record), *_texts(record.__dict__, set())]
        for text in texts:
            for secret in SECRETS:
                assert secret not in text, f"{secret} in a {record.name} record: {text[:2000]}"


@pytest.mark.parametrize("http_server", ["builtin", "hypercorn"])
async def test_no_record_of_the_one_call_server_holds_a_secret(
    every_record: Capture, monkeypatch: pytest.MonkeyPatch, http_server: Literal["builtin", "hypercorn"]
) -> None:
    """logging=True: bearer tokens (good and bad, in the header and the query), cookies,
    Proxy-Authorization and the process environment reach no attribute of any record."""
    monkeypatch.setenv("ASGI_MCP_TEST_API_KEY", ENV_SECRET)
    server = create_per_bearer_server(logging=True, server=http_server).add_token(
        TOKEN_A, factory_of("alpha"), label="alpha"
    )
    extra = {"cookie": f"sid={COOKIE_SECRET}; theme=dark", "proxy-authorization": f"Basic {PROXY_SECRET}"}
    with anyio.fail_after(GUARD):
        async with server, httpx.AsyncClient(headers=extra) as client:
            info = server.server_info()
            assert info is not None
            session = await open_session(client, info.url, TOKEN_A)
            assert await session.tool_names() == ["alpha_only", "block", "fail", "whoami"]
            assert await session.call_tool("whoami") == "alpha"
            refused = await client.post(info.url, json=initialize(0), headers=http_headers(UNKNOWN_TOKEN))
            assert refused.status_code == 401
            in_query = await client.post(
                f"{info.url}?access_token={TOKEN_A}", json=initialize(0), headers=http_headers(TOKEN_A)
            )
            assert in_query.status_code == 200
            stale = await client.post(info.url, json=call_tool(3, "whoami"), headers=http_headers(TOKEN_A, "stale-id"))
            assert stale.status_code == 404
            deleted = await client.delete(info.url, headers=http_headers(TOKEN_A, session.session_id))
            assert deleted.status_code == 200
    access = [record for record in every_record.records if record.name == "asgi_mcp.access"]
    lines = [record.getMessage() for record in access]
    for line in lines:
        assert re.fullmatch(_ACCESS_LINE, line), line
    # One line per answered request, the line itself unchanged: the check below cannot pass
    # vacuously. (hypercorn may add a "- -" line for a stream the client closed first.)
    statuses = [line.split()[-2] for line in lines if not line.endswith(" - -")]
    assert sorted(statuses) == ["200", "200", "200", "200", "200", "202", "401", "404"], "\n".join(lines)
    # The client's own loggers (httpx logs the URL it was given, query string included) are the
    # test's, not the server's.
    served = [record for record in every_record.records if not record.name.startswith(("httpx", "httpcore"))]
    _assert_no_secret_anywhere(served)
