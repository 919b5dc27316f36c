"""CORS: preflight answers, CORS headers on every answer (errors and the RFC 9728 metadata included),
and agreement with the DNS-rebinding Origin check, in memory on asyncio and Trio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import anyio
import pytest
from mcp.server import MCPServer

from asgi_mcp import McpApp, StaticTokenVerifier
from tests.kit.memory import AsgiClient, Response, final_message, serving
from tests.kit.messages import LEGACY, call_tool, initialize, notification

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0
ORIGIN: Final = "https://app.example.com"
OTHER: Final = "https://evil.example.net"
TOKEN: Final = "cors-token-5Rk8Wq2Zp"
WEAK_TOKEN: Final = "cors-weak-token-9Lm3Xc"
# What a browser MCP client sends: none of these is CORS-safelisted.
STANDARD_HEADERS: Final = (
    "authorization",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
)
EXPOSED: Final = {"mcp-session-id", "www-authenticate", "mcp-protocol-version"}


def echo_server() -> MCPServer:
    mcp = MCPServer("cors-test", version="1.0.0")

    @mcp.tool()
    def echo(text: str) -> str:
        return text

    return mcp


def cors_app(cors_origins: Sequence[str] = (ORIGIN,), **options: Any) -> McpApp:
    verifier = StaticTokenVerifier(
        {TOKEN: {"client_id": "full", "scopes": ["mcp"]}, WEAK_TOKEN: {"client_id": "weak", "scopes": []}}
    )
    return McpApp(
        echo_server(),
        token_verifier=verifier,
        required_scopes=["mcp"],
        authorization_servers=["https://auth.example.com"],
        cors_origins=list(cors_origins),
        **options,
    )


def names(value: str | None) -> set[str]:
    """A comma-separated header list, lowercased."""
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def cors_headers(response: Response) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in response.raw_headers:
        name = key.decode("latin-1").lower()
        if name.startswith("access-control-"):
            found.setdefault(name, []).append(value.decode("latin-1"))
    return found


def vary(response: Response) -> set[str]:
    values = [value.decode("latin-1") for key, value in response.raw_headers if key.lower() == b"vary"]
    return names(", ".join(values))


def assert_actual_cors(response: Response, origin: str = ORIGIN) -> None:
    """The headers every answer to an allowed origin carries, whatever its status."""
    headers = cors_headers(response)
    assert headers.get("access-control-allow-origin") == [origin], (response.status, response.raw_headers)
    assert names(response.header("access-control-expose-headers")) >= EXPOSED, response.raw_headers
    assert "origin" in vary(response), response.raw_headers


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def preflight(
    client: AsgiClient, origin: str, requested: str | None, *, method: str = "POST", path: str | None = None
) -> Response:
    headers = {"origin": origin, "access-control-request-method": method}
    if requested is not None:
        headers["access-control-request-headers"] = requested
    response = await client.request("OPTIONS", headers=headers, path=path)
    await response.read()
    return response


# -- preflight ------------------------------------------------------------------------------------


async def test_preflight_of_an_allowed_origin_lists_every_mcp_header() -> None:
    requested = (
        "Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, "
        "Last-Event-ID, Mcp-Param-Region, mcp-param-unit"
    )
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await preflight(client, ORIGIN, requested)
    assert response.status == 204
    assert response.body == b""
    assert response.header("access-control-allow-origin") == ORIGIN
    assert {"get", "post", "delete"} <= names(response.header("access-control-allow-methods"))
    allowed = names(response.header("access-control-allow-headers"))
    assert set(STANDARD_HEADERS) <= allowed
    assert {"mcp-param-region", "mcp-param-unit"} <= allowed
    assert "*" not in allowed  # `*` never covers Authorization
    assert "origin" in vary(response)
    max_age = response.header("access-control-max-age")
    assert max_age is not None
    assert int(max_age) > 0


@pytest.mark.parametrize("requested", [None, "content-type"])
async def test_preflight_lists_the_mcp_headers_even_when_fewer_are_requested(requested: str | None) -> None:
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await preflight(client, ORIGIN, requested)
    assert response.status == 204
    allowed = names(response.header("access-control-allow-headers"))
    assert set(STANDARD_HEADERS) <= allowed
    assert not any(name.startswith("mcp-param-") for name in allowed)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_preflight_for_other_methods_and_paths(method: str) -> None:
    """GET streams and DELETE also preflight; so does the metadata route (answered without a token)."""
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            endpoint = await preflight(client, ORIGIN, "authorization, mcp-session-id", method=method)
            metadata = await preflight(
                client, ORIGIN, "mcp-protocol-version", method="GET", path="/.well-known/oauth-protected-resource/mcp"
            )
    for response in (endpoint, metadata):
        assert response.status == 204
        assert response.header("access-control-allow-origin") == ORIGIN
        assert method.lower() in names(response.header("access-control-allow-methods"))


@pytest.mark.parametrize("requested", ["x-custom", "authorization, x-api-key", "cookie"])
async def test_preflight_with_a_disallowed_request_header_is_refused(requested: str) -> None:
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await preflight(client, ORIGIN, requested)
    assert response.status == 403
    assert "access-control-allow-origin" not in cors_headers(response)


async def test_preflight_from_a_disallowed_origin_is_not_a_cors_answer() -> None:
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await preflight(client, OTHER, "authorization, mcp-session-id")
            # Not even on a route every caller may read.
            other_path = await preflight(client, OTHER, None, path="/.well-known/oauth-protected-resource/mcp")
    for answer in (response, other_path):
        assert answer.status != 204
        assert cors_headers(answer) == {}, answer.raw_headers
        assert "origin" not in vary(answer)
    # The endpoint itself refuses the foreign origin (DNS-rebinding check).
    assert response.status == 403


async def test_options_without_a_request_method_is_not_a_preflight() -> None:
    """A plain OPTIONS from an allowed origin is an ordinary (refused) request, with CORS headers."""
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await client.request("OPTIONS", headers={"origin": ORIGIN, **auth()})
            await response.read()
    assert response.status == 405
    assert_actual_cors(response)
    assert "access-control-allow-methods" not in cors_headers(response)


async def test_any_origin_echoes_the_caller_instead_of_a_star() -> None:
    with anyio.fail_after(GUARD):
        async with serving(cors_app(["*"])) as client:
            pre = await preflight(client, OTHER, "authorization")
            actual = await client.post(initialize(0), headers={"origin": OTHER, **auth()})
            await actual.read()
    assert pre.status == 204
    assert pre.header("access-control-allow-origin") == OTHER
    assert actual.status == 200
    assert_actual_cors(actual, OTHER)


# -- actual responses -----------------------------------------------------------------------------

Call = Callable[[AsgiClient], Awaitable[Response]]


async def _initialize(client: AsgiClient) -> Response:
    return await client.post(initialize(0), headers={"origin": ORIGIN, **auth()})


async def _initialized(client: AsgiClient) -> Response:
    session_id = await _session(client)
    return await client.post(
        notification("notifications/initialized"),
        session_id=session_id,
        version=LEGACY,
        headers={"origin": ORIGIN, **auth()},
    )


async def _tool_call(client: AsgiClient) -> Response:
    session_id = await _session(client)
    return await client.post(
        call_tool(1, "echo", {"text": "hi"}),
        session_id=session_id,
        version=LEGACY,
        headers={"origin": ORIGIN, **auth()},
    )


async def _no_token(client: AsgiClient) -> Response:
    return await client.post(initialize(0), headers={"origin": ORIGIN})


async def _bad_token(client: AsgiClient) -> Response:
    return await client.post(initialize(0), headers={"origin": ORIGIN, **auth("not-a-token")})


async def _insufficient_scope(client: AsgiClient) -> Response:
    return await client.post(initialize(0), headers={"origin": ORIGIN, **auth(WEAK_TOKEN)})


async def _unknown_session(client: AsgiClient) -> Response:
    return await client.post(
        call_tool(1, "echo", {"text": "hi"}),
        session_id="no-such-session",
        version=LEGACY,
        headers={"origin": ORIGIN, **auth()},
    )


async def _unknown_path(client: AsgiClient) -> Response:
    return await client.request("GET", path="/elsewhere", headers={"origin": ORIGIN})


async def _metadata(client: AsgiClient) -> Response:
    return await client.request("GET", path="/.well-known/oauth-protected-resource/mcp", headers={"origin": ORIGIN})


async def _session(client: AsgiClient) -> str:
    response = await client.post(initialize(0), headers={"origin": ORIGIN, **auth()})
    assert response.status == 200
    await final_message(response)
    assert response.session_id is not None
    return response.session_id


ACTUAL: Final[dict[str, tuple[Call, int]]] = {
    "initialize": (_initialize, 200),
    "notification": (_initialized, 202),
    "tool-call": (_tool_call, 200),
    "no-token": (_no_token, 401),
    "bad-token": (_bad_token, 401),
    "insufficient-scope": (_insufficient_scope, 403),
    "unknown-session": (_unknown_session, 404),
    "unknown-path": (_unknown_path, 404),
    "rfc9728-metadata": (_metadata, 200),
}


@pytest.mark.parametrize("case", list(ACTUAL))
async def test_every_answer_to_an_allowed_origin_carries_cors_headers(case: str) -> None:
    call, status = ACTUAL[case]
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await call(client)
            await response.read()
    assert response.status == status, response.body
    assert_actual_cors(response)
    if status == 401 or status == 403:
        # Exposed, so the page can read `resource_metadata` and the scope it lacks.
        assert response.header("www-authenticate") is not None
    if case == "initialize":
        assert response.session_id  # and exposed, so the page can read it


async def test_cors_headers_come_once_on_a_streamed_answer() -> None:
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            response = await _tool_call(client)
            answer = await final_message(response)
    assert answer["result"]["content"][0]["text"] == "hi"
    assert response.content_type == "text/event-stream"
    assert cors_headers(response)["access-control-allow-origin"] == [ORIGIN]
    assert len(cors_headers(response)["access-control-expose-headers"]) == 1


async def test_answers_to_other_origins_carry_no_cors_headers() -> None:
    """A same-origin (no Origin header) caller and a foreign origin get no CORS decoration."""
    with anyio.fail_after(GUARD):
        async with serving(cors_app()) as client:
            plain = await client.post(initialize(0), headers=auth())
            await plain.read()
            metadata = await client.request(
                "GET", path="/.well-known/oauth-protected-resource/mcp", headers={"origin": OTHER}
            )
            await metadata.read()
    assert plain.status == 200
    assert metadata.status == 200
    for response in (plain, metadata):
        assert cors_headers(response) == {}
        assert "origin" not in vary(response)


async def test_no_cors_without_cors_origins() -> None:
    app = McpApp(echo_server())
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            pre = await preflight(client, "http://localhost:3000", "mcp-session-id")
            actual = await client.post(initialize(0), headers={"origin": "http://localhost:3000"})
            await actual.read()
    assert cors_headers(pre) == {}
    assert pre.status == 405  # an OPTIONS request to the endpoint, nothing more
    assert actual.status == 200  # a loopback origin passes the default Origin check ...
    assert cors_headers(actual) == {}  # ... but without CORS headers a browser cannot read it


# -- agreement with the DNS-rebinding check -------------------------------------------------------

# (bound address, Host header): a loopback bind answers loopback origins by default, any other bind
# only same-origin requests; a CORS origin passes both.
BINDS: Final = {
    "loopback": (("127.0.0.1", 8000), "127.0.0.1:8000"),
    "public": (("10.1.2.3", 443), "mcp.example.com"),
}


@pytest.mark.parametrize("bind", list(BINDS))
async def test_a_cors_origin_passes_the_origin_check_and_another_cross_origin_does_not(bind: str) -> None:
    server, host = BINDS[bind]
    with anyio.fail_after(GUARD):
        async with serving(cors_app(), server=server, host=host) as client:
            allowed = await client.post(initialize(0), headers={"origin": ORIGIN, **auth()})
            await allowed.read()
            foreign = await client.post(initialize(0), headers={"origin": OTHER, **auth()})
            body = await foreign.json()
    assert allowed.status == 200
    assert_actual_cors(allowed)
    assert foreign.status == 403
    assert "Origin" in body["error"]["message"]
    assert cors_headers(foreign) == {}


async def test_cors_origins_add_to_an_explicit_allowed_origins_list() -> None:
    app = cors_app(allowed_origins=["https://partner.example.org"])
    with anyio.fail_after(GUARD):
        async with serving(app, server=BINDS["public"][0], host=BINDS["public"][1]) as client:
            statuses = {}
            for origin in (ORIGIN, "https://partner.example.org", OTHER):
                response = await client.post(initialize(0), headers={"origin": origin, **auth()})
                await response.read()
                statuses[origin] = response.status
    assert statuses == {ORIGIN: 200, "https://partner.example.org": 200, OTHER: 403}


@pytest.mark.parametrize("configured", ["https://app.example.com/", "HTTPS://App.Example.COM"])
async def test_spelling_of_a_configured_origin_does_not_split_the_two_checks(configured: str) -> None:
    """Preflight and Origin check must agree: an origin the preflight accepts is served afterwards."""
    with anyio.fail_after(GUARD):
        async with serving(cors_app([configured])) as client:
            pre = await preflight(client, ORIGIN, "authorization")
            actual = await client.post(initialize(0), headers={"origin": ORIGIN, **auth()})
            await actual.read()
    assert pre.status == 204
    assert actual.status == 200, actual.body
    assert_actual_cors(actual)
