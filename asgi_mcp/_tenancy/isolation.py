"""What keeps tenants apart beyond their sessions: their subscription buses, the cache scope of
their results, and the access token their tool code can read.

- `subscriptions/listen`: the SDK's subscription bus carries no tenant, so two tenants whose
  servers share a bus (one server object for two tokens, or one bus given to several servers)
  would hear each other's events. Each tenant's server must have a bus of its own: a server whose
  bus serves another tenant is refused when it is built (the factory has to build a new server).
- `cacheScope`: a tenant's results depend on its token (its tool list is its own), so they are
  never `public`; a server saying otherwise is corrected, with one warning per tenant.
- The access token tool code reads (`get_access_token()`) names the tenant, its scopes, expiry and
  a digest prefix, not the bearer itself, unless the operator opts into the raw token: passing a
  client's token on to other services is what the spec forbids.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, cast

from mcp.server.auth.provider import AccessToken

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.tenancy")


def listen_bus(server: Any) -> object | None:
    """The subscription bus behind a low-level server's `subscriptions/listen` handler, if any."""
    handlers: Any = getattr(server, "_request_handlers", None)
    if not isinstance(handlers, dict):
        return None
    entry: Any = cast("dict[str, Any]", handlers).get("subscriptions/listen")
    handler: Any = getattr(entry, "handler", None)
    return getattr(handler, "_bus", None)


class BusOwners:
    """Which tenant each live subscription bus serves."""

    def __init__(self) -> None:
        self._owners: dict[int, tuple[str, object]] = {}

    def claim(self, tenant_id: str, server: Any) -> str | None:
        """Bind the server's bus to the tenant; returns the other tenant already using it, if any."""
        bus = listen_bus(server)
        if bus is None:
            return None
        owner = self._owners.get(id(bus))
        if owner is not None and owner[1] is bus and owner[0] != tenant_id:
            return owner[0]
        self._owners[id(bus)] = (tenant_id, bus)
        return None

    def release(self, tenant_id: str) -> None:
        for key in [key for key, (owner, _) in self._owners.items() if owner == tenant_id]:
            del self._owners[key]


class PrivateResults:
    """A server middleware: a tenant's results are `cacheScope: "private"`, whatever its server says."""

    def __init__(self, tenant_id: str, warned: set[str]) -> None:
        self.tenant_id = tenant_id
        self._warned = warned

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        result: Any = await call_next(ctx)
        wire: Any = result
        if isinstance(wire, dict) and cast("dict[str, Any]", wire).get("cacheScope") == "public":
            cast("dict[str, Any]", wire)["cacheScope"] = "private"
            if self.tenant_id not in self._warned:
                self._warned.add(self.tenant_id)
                logger.warning(
                    "tenant %s: its server marks results cacheScope public; sent as private (its results "
                    "depend on its token)",
                    self.tenant_id,
                    extra={"tenant_id": self.tenant_id},
                )
        return result


def keep_results_private(server: Any, tenant_id: str, warned: set[str]) -> None:
    middleware: Any = getattr(server, "middleware", None)
    if isinstance(middleware, list) and not any(isinstance(m, PrivateResults) for m in middleware):  # pyright: ignore[reportUnknownVariableType]
        # Innermost, so the results every other middleware sees are already private.
        middleware.append(PrivateResults(tenant_id, warned))  # pyright: ignore[reportUnknownMemberType]


def redacted(access: AccessToken, tenant_id: str | None, digest: bytes | None) -> AccessToken:
    """The access token tool code sees: everything but the bearer, which becomes a digest prefix."""
    if digest is None:
        digest = hashlib.sha256(access.token.encode()).digest()
    label = f"sha256:{digest.hex()[:12]}"
    return access.model_copy(update={"token": label, "client_id": tenant_id or access.client_id})
