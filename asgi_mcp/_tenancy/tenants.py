"""Tenants: each bearer token maps to its own MCP server, built by a factory, changed at runtime.

`Tenants` is the registry the app reads on every request: a local index from token digest to
`Tenant`, looked up synchronously and compared in constant time. What it registers is written to a
tenant store (`_ports.tenant_store`, in memory here) as data: a `TenantRecord` with the tenant id,
label, plan name, metadata and expiry, never the token and never code. Server factories stay in this
process: given directly (a record with no plan) or named by a plan from the `plans` catalogue.

Every change reaches the local index through one method, `_apply`, whatever wrote it; it is what a
worker mirroring a shared store calls for each change the store announces. A tenant is known by a
non-secret id: a caller-given label, else a digest prefix. That id is what stats, events and logs show.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TypeAlias

from .._ports.tenant_store import InMemoryTenantStore, SessionPolicy, TenantChange, TenantRecord, token_digest

__all__ = ["ServerFactory", "SessionPolicy", "TenantRegistry", "Tenants"]

ServerFactory: TypeAlias = Callable[[], Any | Awaitable[Any]]
"""Builds the tenant's server: returns (or awaits to) an `mcp` `Server` or `MCPServer`."""

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


@dataclass(eq=False)
class Tenant:
    """One registered token, as this process serves it. `generation` changes whenever its factory is replaced."""

    tenant_id: str
    digest: bytes
    factory: ServerFactory
    labelled: bool
    generation: int = 0
    not_after: float | None = None  # wall clock; the token is refused from then on
    record: TenantRecord | None = None  # what the store holds
    # Set by the app: the state of the server built from the current factory.
    runtime: dict[str, Any] = field(default_factory=lambda: dict[str, Any]())

    @property
    def owner(self) -> str:
        """Sessions bind to this; it names the credential without revealing it."""
        return "t:" + self.digest.hex()

    @property
    def plan(self) -> str | None:
        return self.record.plan if self.record is not None else None

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.record.metadata if self.record is not None else {}


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
    """Token registry, over an in-memory tenant store.

    Args:
        tokens: initial tokens and their factories.
        plans: plan names and their factories; `add` and `update` may name a plan instead of a factory.

    Each method is synchronous and safe to call from any task while the app serves requests: the
    app reacts to changes (ending or draining sessions, retiring servers) before the call returns.
    """

    def __init__(
        self, tokens: Mapping[str, ServerFactory] | None = None, *, plans: Mapping[str, ServerFactory] | None = None
    ) -> None:
        self._plans = dict(plans or {})
        for plan, factory in self._plans.items():
            _check_factory(factory, f"plan {plan!r}")
        self._store = InMemoryTenantStore()
        self._by_digest: dict[bytes, Tenant] = {}
        self._ids: dict[str, Tenant] = {}
        self._observers: list[RegistryObserver] = []
        self._version = 0  # of the last change applied
        for token, factory in (tokens or {}).items():
            self.add(token, factory)

    def subscribe(self, observer: RegistryObserver) -> None:
        self._observers.append(observer)

    def lookup(self, token: str) -> Tenant | None:
        """The tenant of `token`, or None (also once it expired). Only digests are kept; they are compared
        in constant time. The same digest as the store's (`InMemoryTenantStore.digest`)."""
        digest = token_digest(token)
        tenant = self._by_digest.get(digest)
        if tenant is None or not hmac.compare_digest(tenant.digest, digest):
            return None
        if tenant.not_after is not None and time.time() >= tenant.not_after:
            return None
        return tenant

    def add(
        self,
        token: str,
        factory: ServerFactory | str,
        *,
        label: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        not_after: float | None = None,
    ) -> str:
        """Register a token; returns its tenant id.

        Args:
            token: the bearer token (kept only as a digest).
            factory: the tenant's server factory, or the name of a plan from `plans`.
            label: the tenant id to use, instead of one derived from the token's digest.
            metadata: a JSON object kept with the tenant (`Tenant.metadata`).
            not_after: wall-clock time (seconds since the epoch) from which the token gets 401.

        Raises `ValueError` if the token is registered (use `update`), the label is taken or malformed,
        the plan is unknown, the metadata is not JSON, or the token is empty or has whitespace."""
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("a bearer token must be non-empty and contain no whitespace")
        plan, given = self._resolve(factory)
        digest = self._store.digest(token)
        if label is not None and not _LABEL.match(label):
            raise ValueError("label must be 1-64 characters of letters, digits and ._:@-")
        tenant_id = label if label is not None else "tok-" + digest.hex()[:12]
        record = TenantRecord(
            digest=digest,
            tenant_id=tenant_id,
            label=label,
            plan=plan,
            metadata=dict(metadata or {}),
            not_after=not_after,
        )
        try:
            change = self._store.add_nowait(record)
        except TypeError:
            raise ValueError("metadata must be a JSON object") from None
        self._apply(change, given)
        return tenant_id

    def remove(
        self, token: str, *, policy: SessionPolicy = "close", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> bool:
        """Unregister a token; False if it was not registered. Its requests get 401 from now on."""
        _check_policy(policy, drain_timeout)
        tenant = self._known(token)
        if tenant is None:
            return False
        change = self._store.remove_nowait(tenant.digest, policy=policy, drain_timeout=drain_timeout)
        if change is not None:
            self._apply(change)
        return change is not None

    def update(
        self,
        token: str,
        factory: ServerFactory | str,
        *,
        policy: SessionPolicy = "drain",
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> bool:
        """Replace a token's factory (or plan); False if it was not registered. New sessions get the new one."""
        _check_policy(policy, drain_timeout)
        plan, given = self._resolve(factory)
        tenant = self._known(token)
        if tenant is None or tenant.record is None:
            return False
        change = self._store.replace_nowait(
            replace(tenant.record, plan=plan), policy=policy, drain_timeout=drain_timeout
        )
        if change is not None:
            self._apply(change, given)
        return change is not None

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

    # -- the local index ---------------------------------------------------------------------------

    def _known(self, token: str) -> Tenant | None:
        """The registered tenant of `token`, expired or not (an expired token can still be removed)."""
        digest = self._store.digest(token)
        tenant = self._by_digest.get(digest)
        return tenant if tenant is not None and hmac.compare_digest(tenant.digest, digest) else None

    def _factory_of(self, record: TenantRecord) -> ServerFactory:
        if record.plan is None or record.plan not in self._plans:
            raise ValueError(f"tenant {record.tenant_id!r}: no factory for plan {record.plan!r} in this process")
        return self._plans[record.plan]

    def _resolve(self, factory: ServerFactory | str) -> tuple[str | None, ServerFactory]:
        """(plan name or None, the factory) for what a caller passed."""
        if isinstance(factory, str):
            if factory not in self._plans:
                raise ValueError(f"unknown plan {factory!r}")
            return factory, self._plans[factory]
        _check_factory(factory, "factory")
        return None, factory

    def _apply(self, change: TenantChange, factory: ServerFactory | None = None) -> None:
        """Bring the local index to `change`, then tell the observers. `factory` is the one given in code;
        without it the record's plan names it (a mirror of a shared store passes none)."""
        record = change.record
        self._version = change.version
        if change.kind == "added":
            factory = factory or self._factory_of(record)
            tenant = Tenant(
                record.tenant_id,
                record.digest,
                factory,
                labelled=record.label is not None,
                generation=record.generation,
                not_after=record.not_after,
                record=record,
            )
            self._by_digest[record.digest] = tenant
            self._ids[record.tenant_id] = tenant
            for observer in self._observers:
                observer.tenant_added(tenant)
        elif change.kind == "updated":
            tenant = self._by_digest[record.digest]
            tenant.factory = factory or self._factory_of(record)
            tenant.generation, tenant.record = record.generation, record
            tenant.not_after = record.not_after
            for observer in self._observers:
                observer.tenant_updated(tenant, change.policy, change.drain_timeout)
        elif change.kind == "removed":
            tenant = self._by_digest.pop(record.digest)
            del self._ids[tenant.tenant_id]
            for observer in self._observers:
                observer.tenant_removed(tenant, change.policy, change.drain_timeout)
        else:  # pragma: no cover - ChangeKind has three members
            raise ValueError(f"unknown change kind {change.kind!r}")


def _check_factory(factory: object, what: str) -> None:
    if not callable(factory):
        raise TypeError(f"{what} must be a callable returning a Server or MCPServer")


def _check_policy(policy: str, drain_timeout: float) -> None:
    if policy not in ("drain", "close"):
        raise ValueError("policy must be 'drain' or 'close'")
    if drain_timeout < 0:
        raise ValueError("drain_timeout must not be negative")
