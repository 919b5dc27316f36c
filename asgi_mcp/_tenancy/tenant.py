"""A registered tenant as this process serves it, and the protocols around the token registry.

`Tenant` is what the registry's local index holds per tenant (its store record, its server factory,
the app's runtime state for it); `RegistryObserver` is how the app hears of changes;
`CredentialEnd` says why a token stopped working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from .._ports.tenant_store import SessionPolicy, TenantRecord

__all__ = ["CredentialEnd", "RegistryObserver", "ServerFactory", "Tenant"]

ServerFactory: TypeAlias = Callable[[], Any | Awaitable[Any]]
"""Builds the tenant's server: returns (or awaits to) an `mcp` `Server` or `MCPServer`."""


@dataclass(eq=False)
class Tenant:
    """One tenant as this process serves it, returned by `Tenants.lookup` and `Tenants.by_id`:
    its id, plan and metadata are the operator's; `digest` names its first token (never the token);
    `generation` changes whenever its factory is replaced. The rest belongs to the app."""

    tenant_id: str
    digest: bytes
    factory: ServerFactory
    labelled: bool
    generation: int = 0
    record: TenantRecord | None = None  # what the store holds
    # Set by the app: the state of the server built from the current factory.
    runtime: dict[str, Any] = field(default_factory=lambda: dict[str, Any]())

    @property
    def owner(self) -> str:
        """Sessions bind to this; it names the tenant's first credential without revealing it, and
        stays the same when the token is rotated."""
        return "t:" + self.digest.hex()

    @property
    def plan(self) -> str | None:
        return self.record.plan if self.record is not None else None

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.record.metadata if self.record is not None else {}


CredentialEnd = Literal["token_removed", "rotated", "expired"]
"""Why a token stopped working: removed by the operator, rotated out (its grace over), or expired."""


class RegistryObserver(Protocol):
    """What `Tenants.subscribe` calls, synchronously, on every change (the app's tenant servers are
    one; a mirror of the registry elsewhere may be another)."""

    def tenant_added(self, tenant: Tenant) -> None: ...

    def tenant_removed(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None: ...

    def tenant_updated(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None: ...

    def token_rotated(self, tenant: Tenant, grace: float) -> None: ...

    def credential_ended(self, tenant: Tenant, digest: bytes, reason: CredentialEnd) -> None:
        """One token of a tenant that keeps others stopped working (removed, rotated out, expired)."""
        ...
