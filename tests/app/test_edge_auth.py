"""Authentication at the app's edge (`asgi_mcp._app.edge_auth`): the public resource and metadata URLs,
and who a request's bearer token makes the caller, by a verifier or by the tenant registry."""

from __future__ import annotations

import hashlib
from typing import Any, Final

import pytest
from mcp.server import MCPServer

from asgi_mcp import HttpRequest, StaticTokenVerifier, Tenants
from asgi_mcp._app.config import AppConfig
from asgi_mcp._app.edge_auth import EdgeAuth, ResourceUrls
from asgi_mcp._auth.bearer import AuthenticationError
from asgi_mcp._auth.principal import Principal
from asgi_mcp._core.http import Headers
from asgi_mcp._kernel.hosting import ServerHost
from asgi_mcp._ops.lifecycle import EventHub
from asgi_mcp._tenancy.servers import TenantServers

TOKEN: Final = "edge-auth-token-1"
AUTH_SERVER: Final = "https://auth.example.com"


def server() -> MCPServer:
    return MCPServer("edge-auth-test", version="1.0.0")


def scope(host: str = "mcp.example.com", root_path: str = "", authorization: str | None = None) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": "/mcp",
        "root_path": root_path,
        "headers": headers,
    }


def http_request(the_scope: dict[str, Any]) -> HttpRequest:
    return HttpRequest("POST", the_scope["path"], Headers(the_scope["headers"]), the_scope)


def urls(**options: Any) -> ResourceUrls:
    return ResourceUrls(AppConfig(server=server(), **options))


def test_resource_url_is_the_endpoint_as_seen_from_outside() -> None:
    assert urls().resource_url(scope()) == "https://mcp.example.com/mcp"
    assert urls().resource_url(scope(root_path="/api")) == "https://mcp.example.com/api/mcp"
    assert urls(path="/").resource_url(scope()) == "https://mcp.example.com"
    configured = urls(resource_server_url="https://public.example.com/x/mcp")
    assert configured.resource_url(scope()) == "https://public.example.com/x/mcp"


def test_metadata_url_sits_under_the_endpoints_prefix() -> None:
    assert urls().metadata_url(http_request(scope())) is None  # no authorization server: nothing advertised
    advertised = urls(authorization_servers=[AUTH_SERVER])
    assert (
        advertised.metadata_url(http_request(scope(root_path="/api")))
        == "https://mcp.example.com/api/.well-known/oauth-protected-resource/mcp"
    )
    behind_proxy = urls(authorization_servers=[AUTH_SERVER], resource_server_url="https://public.example.com/x/mcp")
    assert (
        behind_proxy.metadata_url(http_request(scope()))
        == "https://public.example.com/x/.well-known/oauth-protected-resource/mcp"
    )
    at_root = urls(authorization_servers=[AUTH_SERVER], path="/")
    assert at_root.metadata_url(http_request(scope())) == "https://mcp.example.com/.well-known/oauth-protected-resource"
    # A Host header no URL can hold: advertise nothing rather than fail the request.
    assert advertised.metadata_url(http_request(scope(host="a]"))) is None


def anonymous(host: ServerHost | None = None) -> Principal:
    async def get_host() -> ServerHost:
        assert host is not None
        return host

    return Principal(owner="", tenant_id=None, host=get_host)


def challenge_of(error: AuthenticationError) -> str:
    return dict(error.headers)[b"www-authenticate"].decode()


@pytest.mark.anyio
async def test_a_verified_caller_reaches_the_single_server() -> None:
    verifier = StaticTokenVerifier({TOKEN: {"client_id": "client-1", "scopes": ["read"]}})
    config = AppConfig(server=server(), token_verifier=verifier, authorization_servers=[AUTH_SERVER])
    auth = EdgeAuth(config, None, ResourceUrls(config))
    run = anonymous()
    principal, access = await auth.authenticate(http_request(scope(authorization=f"Bearer {TOKEN}")), run)
    # Tool code sees a digest prefix in place of the bearer, unless the operator opts in.
    assert (access.client_id, access.token) == ("client-1", f"sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()[:12]}")
    exposed = AppConfig(server=server(), token_verifier=verifier, expose_raw_token=True)
    _, raw = await EdgeAuth(exposed, None, ResourceUrls(exposed)).authenticate(
        http_request(scope(authorization=f"Bearer {TOKEN}")), run
    )
    assert raw.token == TOKEN
    assert principal.host is run.host
    assert principal.tenant_id is None
    assert principal.owner
    with pytest.raises(AuthenticationError) as refused:
        await auth.authenticate(http_request(scope(authorization="Bearer wrong")), run)
    assert refused.value.status == 401
    assert 'error="invalid_token"' in challenge_of(refused.value)
    assert 'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"' in challenge_of(
        refused.value
    )


@pytest.mark.anyio
async def test_a_tenants_token_makes_the_caller_that_tenant() -> None:
    tenants = Tenants()
    tenant_id = tenants.add(TOKEN, server, label="acme")
    tenant = tenants.lookup(TOKEN)
    assert tenant is not None
    assert tenant.tenant_id == tenant_id == "acme"
    config = AppConfig(tenants=tenants, required_scopes=["mcp"])
    auth = EdgeAuth(config, TenantServers(EventHub()), ResourceUrls(config))
    principal, access = await auth.authenticate(http_request(scope(authorization=f"Bearer {TOKEN}")), anonymous())
    assert (principal.tenant_id, principal.owner) == (tenant.tenant_id, tenant.owner)
    assert (access.client_id, access.scopes) == ("acme", ["mcp"])
    for authorization, error in ((None, None), ("Bearer unknown-token", "invalid_token")):
        with pytest.raises(AuthenticationError) as refused:
            await auth.authenticate(http_request(scope(authorization=authorization)), anonymous())
        assert refused.value.status == 401
        value = challenge_of(refused.value)
        assert value.startswith("Bearer")
        assert ('error="invalid_token"' in value) == (error is not None)
        assert 'scope="mcp"' in value
        assert "unknown-token" not in value
