"""Plain ASGI middleware the tests wrap around the app: contextvars set here must reach handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from ._servers import TENANT

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def tenant_middleware(app: App) -> App:
    """Sets a contextvar from a request header around the app, as multi-tenant middleware does."""

    async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        tenant = dict(scope["headers"]).get(b"x-tenant", b"").decode() or None
        token = TENANT.set(tenant)
        try:
            await app(scope, receive, send)
        finally:
            TENANT.reset(token)

    return middleware


def auth_middleware(app: App) -> App:
    """Authenticates `Authorization: Bearer <client>` and hands it to the SDK's AuthContextMiddleware."""
    inner = AuthContextMiddleware(app)

    async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            if header.startswith("Bearer "):
                client_id = header.removeprefix("Bearer ")
                scope = {
                    **scope,
                    "user": AuthenticatedUser(AccessToken(token=client_id, client_id=client_id, scopes=[])),
                }
        await inner(scope, receive, send)

    return middleware
