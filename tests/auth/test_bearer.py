"""Bearer authentication: challenges (RFC 6750), RFC 9728 metadata, scope and audience checks,
session binding to the principal, and authentication before the body is read."""

from __future__ import annotations

import json
import time
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest
from mcp.server.auth.provider import AccessToken

from asgi_mcp import McpApp, Tenants
from asgi_mcp._auth.bearer import challenge, parse_bearer
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B, UNKNOWN_TOKEN, build_server, factory_of, text_of
from tests.kit.memory import AsgiClient, TokenClient, serving
from tests.kit.messages import call_tool, challenge_params, initialize, request

pytestmark = pytest.mark.anyio

GUARD = 10.0
ISSUER = "https://auth.example.com"
PRM = "/.well-known/oauth-protected-resource"


class Verifier:
    """An in-test `TokenVerifier`: a fixed table of tokens."""

    def __init__(self, tokens: dict[str, AccessToken]) -> None:
        self.tokens = tokens
        self.seen: list[str] = []

    async def verify_token(self, token: str) -> AccessToken | None:
        self.seen.append(token)
        return self.tokens.get(token)


def access(token: str, client_id: str, scopes: list[str], **fields: Any) -> AccessToken:
    return AccessToken(token=token, client_id=client_id, scopes=scopes, **fields)


def verifier_app(**options: Any) -> tuple[McpApp, Verifier]:
    verifier = Verifier(
        {
            "good": access("good", "client-1", ["mcp:read", "mcp:write"]),
            "good-rotated": access("good-rotated", "client-1", ["mcp:read", "mcp:write"]),
            "other": access("other", "client-2", ["mcp:read", "mcp:write"]),
            "read-only": access("read-only", "client-3", ["mcp:read"]),
            "expired": access("expired", "client-4", ["mcp:read", "mcp:write"], expires_at=int(time.time()) - 60),
            "elsewhere": access(
                "elsewhere", "client-5", ["mcp:read", "mcp:write"], resource="https://other.example/mcp"
            ),
            "here": access("here", "client-6", ["mcp:read", "mcp:write"], resource="https://mcp.example.com/mcp/"),
        }
    )
    options.setdefault("required_scopes", ["mcp:read", "mcp:write"])
    options.setdefault("authorization_servers", [ISSUER])
    return McpApp(build_server(), token_verifier=verifier, **options), verifier


def www_authenticate(response: Any) -> dict[str, str]:
    value = response.header("www-authenticate")
    assert value is not None, response.raw_headers
    return challenge_params(value)


# -- pure pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("  Bearer abc", "abc"),
        ("Basic dXNlcjpwdw==", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("Bearer a\tb", None),
        ("Bearer a\u00a0b", None),
        ("Bearer a\u2003b", None),
        ("Bearer \u3000abc\u2028", "abc"),
        ("Bearer\tabc", None),
        ("Bearerabc", None),
    ],
)
def test_parse_bearer(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


def test_challenge_without_credentials_has_no_error_code() -> None:
    assert challenge() == "Bearer"
    value = challenge(scopes=["a", "b"], resource_metadata="https://x/.well-known/oauth-protected-resource/mcp")
    assert "error" not in value
    assert challenge_params(value) == {
        "resource_metadata": "https://x/.well-known/oauth-protected-resource/mcp",
        "scope": "a b",
    }


def test_challenge_escapes_quoted_strings() -> None:
    value = challenge(error="invalid_token", description='bad "token" \\ here\r\nX-Injected: 1')
    assert "\r" not in value
    assert "\n" not in value
    assert 'error_description="bad \\"token\\" \\\\ hereX-Injected: 1"' in value
    assert challenge_params(value)["error_description"] == 'bad "token" \\ hereX-Injected: 1'


# -- challenges through the app, with a token verifier --------------------------------------------


async def test_verifier_challenges() -> None:
    app, _ = verifier_app()
    metadata_url = f"http://127.0.0.1:8000{PRM}/mcp"
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            # No credentials (or another scheme): a plain challenge, no error code.
            for token_header in (None, "Basic dXNlcjpwdw==", "Bearer"):
                headers = {"authorization": token_header} if token_header else {}
                response = await client.post(initialize(), headers=headers)
                assert response.status == 401
                assert www_authenticate(response) == {"resource_metadata": metadata_url, "scope": "mcp:read mcp:write"}
            # Unknown, expired, wrong-audience tokens: invalid_token.
            for token in ("nope", "expired"):
                response = await TokenClient(client, token).post(initialize())
                assert response.status == 401
                params = www_authenticate(response)
                assert params["error"] == "invalid_token"
                assert params["resource_metadata"] == metadata_url
                body = await response.json()
                assert body["error"] == "invalid_token"
                assert body["error_description"] == params["error_description"]
            # Too few scopes: 403 insufficient_scope naming the missing scope.
            response = await TokenClient(client, "read-only").post(initialize())
            assert response.status == 403
            params = www_authenticate(response)
            assert params["error"] == "insufficient_scope"
            assert "mcp:write" in params["scope"].split()
            assert "mcp:write" in params["error_description"]
            assert (await response.json())["error"] == "insufficient_scope"
            # A good token is served, and handlers see its AccessToken.
            good = TokenClient(client, "good")
            session_id = await good.open_session()
            assert text_of((await good.call(session_id, call_tool(1, "whoami")))["result"]).endswith("client=client-1")


async def test_validate_resource_checks_the_audience() -> None:
    app, _ = verifier_app(resource_server_url="https://mcp.example.com/mcp", validate_resource=True)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            refused = await TokenClient(client, "elsewhere").post(initialize())
            assert refused.status == 401
            params = www_authenticate(refused)
            assert params["error"] == "invalid_token"
            assert params["resource_metadata"] == f"https://mcp.example.com{PRM}/mcp"
            missing = await TokenClient(client, "good").post(initialize())  # no audience at all
            assert missing.status == 401
            # Canonical comparison: a trailing slash does not matter.
            await TokenClient(client, "here").open_session()


async def test_sessions_are_bound_to_the_principal_not_the_token_string() -> None:
    app, _ = verifier_app()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            session_id = await TokenClient(client, "good").open_session()
            other = TokenClient(client, "other")
            assert (await other.post(request(1, "ping"), session_id=session_id)).status == 404
            assert (await other.get(session_id)).status == 404
            assert (await other.delete(session_id)).status == 404
            # The same principal with a refreshed token keeps its session.
            rotated = TokenClient(client, "good-rotated")
            assert (await rotated.call(session_id, request(2, "ping")))["result"] == {}


async def test_scope_values_are_escaped_in_the_challenge() -> None:
    app, _ = verifier_app(required_scopes=["files:read", 'say"hi\\'])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            response = await client.post(initialize())
            assert response.status == 401
            raw = response.header("www-authenticate") or ""
            assert 'scope="files:read say\\"hi\\\\"' in raw
            assert www_authenticate(response)["scope"] == 'files:read say"hi\\'


# -- challenges through the app, with tenants -----------------------------------------------------


async def test_tenant_challenges() -> None:
    tenants = Tenants({TOKEN_A: factory_of("alpha"), TOKEN_B: factory_of("bravo")})
    app = McpApp(tenants=tenants, authorization_servers=[ISSUER], required_scopes=["mcp"])
    metadata_url = f"http://127.0.0.1:8000{PRM}/mcp"
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            anonymous = await client.post(initialize())
            assert anonymous.status == 401
            assert www_authenticate(anonymous) == {"resource_metadata": metadata_url, "scope": "mcp"}
            for token in (UNKNOWN_TOKEN, "x" * 4000):
                response = await TokenClient(client, token).post(initialize())
                assert response.status == 401
                params = www_authenticate(response)
                assert params["error"] == "invalid_token"
                assert params["scope"] == "mcp"
                assert token not in (response.header("www-authenticate") or "")
            a = TokenClient(client, TOKEN_A)
            await a.open_session()
            assert tenants.remove(TOKEN_A)
            removed = await a.post(initialize())
            assert removed.status == 401
            assert www_authenticate(removed)["error"] == "invalid_token"
            # Whitespace around the credentials is tolerated.
            spaced = await client.post(initialize(), headers={"authorization": f"  bearer   {TOKEN_B}  "})
            assert spaced.status == 200


async def test_without_authorization_servers_there_is_no_metadata() -> None:
    app = McpApp(tenants=Tenants({TOKEN_A: factory_of("alpha")}))
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            response = await client.post(initialize())
            assert response.status == 401
            assert response.header("www-authenticate") == "Bearer"
            for path in (PRM, PRM + "/mcp"):
                assert (await client.request("GET", path=path)).status == 404


# -- RFC 9728 metadata ----------------------------------------------------------------------------


async def test_metadata_at_both_well_known_paths() -> None:
    app, _ = verifier_app(required_scopes=["mcp:read", "offline_access"])
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            for path in (PRM, PRM + "/mcp"):
                response = await client.request("GET", path=path)
                assert response.status == 200, path
                document = await response.json()
                assert document["resource"] == "http://127.0.0.1:8000/mcp"
                assert document["authorization_servers"] == [ISSUER]
                assert document["bearer_methods_supported"] == ["header"]
                assert document["scopes_supported"] == ["mcp:read"]
            assert (await client.request("GET", path=PRM + "/other")).status == 404


async def test_metadata_honours_resource_server_url() -> None:
    app, _ = verifier_app(resource_server_url="https://mcp.example.com/mcp")
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            for path in (PRM, PRM + "/mcp"):
                document = await (await client.request("GET", path=path)).json()
                assert document["resource"] == "https://mcp.example.com/mcp"
            response = await client.post(initialize())
            assert www_authenticate(response)["resource_metadata"] == f"https://mcp.example.com{PRM}/mcp"


async def test_metadata_and_challenge_honour_root_path() -> None:
    """Mounted at /api: the metadata is served under the mount, names /api/mcp, and the challenge
    points at a metadata URL the app itself serves."""
    app, _ = verifier_app()
    with anyio.fail_after(GUARD):
        async with serving(app) as client:

            def mounted(method: str, path: str) -> dict[str, Any]:
                scope = client.scope(
                    method,
                    "/api" + path,
                    {"content-type": "application/json", "accept": "application/json, text/event-stream"},
                )
                scope["root_path"] = "/api"
                return scope

            for path in (PRM, PRM + "/mcp"):
                response = await client.request("GET", scope=mounted("GET", path))
                assert response.status == 200, path
                assert (await response.json())["resource"] == "http://127.0.0.1:8000/api/mcp"
            refused = await client.request(
                "POST", scope=mounted("POST", "/mcp"), body=json.dumps(initialize()).encode()
            )
            assert refused.status == 401
            metadata_url = www_authenticate(refused)["resource_metadata"]
            prefix = "http://127.0.0.1:8000/api/"
            assert metadata_url.startswith(prefix), metadata_url
            fetched = await client.request("GET", scope=mounted("GET", metadata_url[len(prefix) - 1 :]))
            assert fetched.status == 200
            assert (await fetched.json())["resource"] == "http://127.0.0.1:8000/api/mcp"


# -- authentication before the body ---------------------------------------------------------------


async def _call_recording_receive(app: McpApp, headers: dict[str, str]) -> tuple[int, bool]:
    """Call the app once; returns the status and whether it ever called receive()."""
    called = False
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal called
        called = True
        return {"type": "http.request", "body": json.dumps(initialize()).encode(), "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async with anyio.create_task_group() as tg:
        scope = AsgiClient(app, tg).scope(
            "POST",
            None,
            {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers},
        )
        with anyio.fail_after(GUARD):
            await app(scope, receive, send)
    return sent[0]["status"], called


async def test_authentication_happens_before_the_body_is_read() -> None:
    verifier_based, verifier = verifier_app(json_response=True)
    tenant_based = McpApp(tenants=Tenants({TOKEN_A: factory_of("alpha")}), json_response=True)
    for app, good in ((verifier_based, "good"), (tenant_based, TOKEN_A)):
        async with app.lifespan_context():
            assert await _call_recording_receive(app, {}) == (401, False)
            assert await _call_recording_receive(app, {"authorization": "Bearer wrong"}) == (401, False)
            # The control: an authenticated request does read its body.
            assert await _call_recording_receive(app, {"authorization": f"Bearer {good}"}) == (200, True)
    assert await _call_recording_receive_insufficient(verifier) == (403, False)


async def _call_recording_receive_insufficient(verifier: Verifier) -> tuple[int, bool]:
    app = McpApp(build_server(), token_verifier=verifier, required_scopes=["mcp:read", "mcp:write"])
    async with app.lifespan_context():
        return await _call_recording_receive(app, {"authorization": "Bearer read-only"})
