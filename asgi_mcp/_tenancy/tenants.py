"""Tenants: each bearer token maps to its own MCP server, built by a factory, changed at runtime.

`Tenants` is the in-memory registry. It keeps only SHA-256 digests of tokens (compared in constant
time) and knows each tenant by a non-secret id: a caller-given label, else a digest prefix. That id
is what stats, events and logs show. The registry is the small interface a shared backend would
replace; the app subscribes to its changes to end or drain sessions and stop servers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeAlias

__all__ = ["ServerFactory", "SessionPolicy", "TenantRegistry", "Tenants"]

ServerFactory: TypeAlias = Callable[[], Any | Awaitable[Any]]
"""Builds the tenant's server: returns (or awaits to) an `mcp` `Server` or `MCPServer`."""

SessionPolicy = Literal["drain", "close"]
"""What happens to a tenant's live sessions when its token is removed or its factory replaced:
`close` ends them now (each with `session_ended`); `drain` lets them finish on the old server,
until they go idle or `drain_timeout` passes."""

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(eq=False)
class Tenant:
    """One registered token. `generation` changes whenever its factory is replaced."""

    tenant_id: str
    digest: bytes
    factory: ServerFactory
    labelled: bool
    generation: int = 0
    # Set by the app: the state of the server built from the current factory.
    runtime: dict[str, Any] = field(default_factory=lambda: dict[str, Any]())

    @property
    def owner(self) -> str:
        """Sessions bind to this; it names the credential without revealing it."""
        return "t:" + self.digest.hex()


class RegistryObserver(Protocol):
    def tenant_added(self, tenant: Tenant) -> None: ...

    def tenant_removed(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None: ...

    def tenant_updated(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None: ...


class TenantRegistry(Protocol):
    """What the app needs from a token registry."""

    def lookup(self, token: str) -> Tenant | None: ...

    def subscribe(self, observer: RegistryObserver) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Tenant]: ...


class Tenants:
    """In-memory token registry.

    Args:
        tokens: initial tokens and their factories.

    Each method is synchronous and safe to call from any task while the app serves requests: the
    app reacts to changes (ending or draining sessions, retiring servers) before the call returns.
    """

    def __init__(self, tokens: Mapping[str, ServerFactory] | None = None) -> None:
        self._by_digest: dict[bytes, Tenant] = {}
        self._ids: dict[str, Tenant] = {}
        self._observers: list[RegistryObserver] = []
        for token, factory in (tokens or {}).items():
            self.add(token, factory)

    def subscribe(self, observer: RegistryObserver) -> None:
        self._observers.append(observer)

    def lookup(self, token: str) -> Tenant | None:
        """The tenant of `token`, or None. Only digests are kept; they are compared in constant time."""
        digest = token_digest(token)
        tenant = self._by_digest.get(digest)
        if tenant is None or not hmac.compare_digest(tenant.digest, digest):
            return None
        return tenant

    def add(self, token: str, factory: ServerFactory, *, label: str | None = None) -> str:
        """Register a token; returns its tenant id. Raises `ValueError` if the token is registered
        (use `update`), the label is taken or malformed, or the token is empty or has whitespace."""
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("a bearer token must be non-empty and contain no whitespace")
        if not callable(factory):
            raise TypeError("factory must be a callable returning a Server or MCPServer")
        digest = token_digest(token)
        if digest in self._by_digest:
            raise ValueError("token is already registered; use update() to replace its factory")
        if label is not None:
            if not _LABEL.match(label):
                raise ValueError("label must be 1-64 characters of letters, digits and ._:@-")
            tenant_id = label
        else:
            tenant_id = "tok-" + digest.hex()[:12]
        if tenant_id in self._ids:
            raise ValueError(f"tenant id {tenant_id!r} is already in use")
        tenant = Tenant(tenant_id, digest, factory, labelled=label is not None)
        self._by_digest[digest] = tenant
        self._ids[tenant_id] = tenant
        for observer in self._observers:
            observer.tenant_added(tenant)
        return tenant_id

    def remove(
        self, token: str, *, policy: SessionPolicy = "close", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> bool:
        """Unregister a token; False if it was not registered. Its requests get 401 from now on."""
        _check_policy(policy, drain_timeout)
        tenant = self.lookup(token)
        if tenant is None:
            return False
        del self._by_digest[tenant.digest]
        del self._ids[tenant.tenant_id]
        for observer in self._observers:
            observer.tenant_removed(tenant, policy, drain_timeout)
        return True

    def update(
        self,
        token: str,
        factory: ServerFactory,
        *,
        policy: SessionPolicy = "drain",
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> bool:
        """Replace a token's factory; False if it was not registered. New sessions get the new one."""
        _check_policy(policy, drain_timeout)
        if not callable(factory):
            raise TypeError("factory must be a callable returning a Server or MCPServer")
        tenant = self.lookup(token)
        if tenant is None:
            return False
        tenant.factory = factory
        tenant.generation += 1
        for observer in self._observers:
            observer.tenant_updated(tenant, policy, drain_timeout)
        return True

    def has(self, token: str) -> bool:
        return self.lookup(token) is not None

    def ids(self) -> list[str]:
        return list(self._ids)

    def by_id(self, tenant_id: str) -> Tenant | None:
        return self._ids.get(tenant_id)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(list(self._by_digest.values()))

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.has(token)

    def __repr__(self) -> str:
        return f"Tenants({sorted(self._ids)!r})"


def _check_policy(policy: str, drain_timeout: float) -> None:
    if policy not in ("drain", "close"):
        raise ValueError("policy must be 'drain' or 'close'")
    if drain_timeout < 0:
        raise ValueError("drain_timeout must not be negative")
