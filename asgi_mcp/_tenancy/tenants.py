"""Tenants: each bearer token maps to its own MCP server, built by a factory, changed at runtime.

`Tenants` is the registry the app reads on every request: a local index from token digest to
`Tenant`, looked up synchronously and compared in constant time. What it registers is written to a
tenant store (`_ports.tenant_store`, in memory here) as data: a `TenantRecord` (tenant id, label,
plan name, metadata) and a `Credential` per token (digest, expiry), never a token and never code.
Server factories stay in this process: given in code, or named by a plan from the `plans` catalogue.

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

from .._ports.tenant_store import (
    Credential,
    InMemoryTenantStore,
    SessionPolicy,
    TenantChange,
    TenantRecord,
    token_digest,
)

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
        plans: plan names and their factories: `add` and `update` may name a plan instead of passing one.

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
        # digest -> (the digest as stored, its tenant): a hit is compared again in constant time.
        self._by_digest: dict[bytes, tuple[bytes, Tenant]] = {}
        self._not_after: dict[bytes, float] = {}  # the tokens that expire: wall-clock time they stop
        self._ids: dict[str, Tenant] = {}
        self._observers: list[RegistryObserver] = []
        self._version = 0  # of the last change applied
        for token, factory in (tokens or {}).items():
            self.add(token, factory)

    def subscribe(self, observer: RegistryObserver) -> None:
        self._observers.append(observer)

    def lookup(self, token: str) -> Tenant | None:
        """The tenant of `token`, or None (unknown, or expired). Only digests are kept (the store's:
        `InMemoryTenantStore.digest`); they are compared in constant time."""
        digest = token_digest(token)
        held = self._by_digest.get(digest)
        if held is None or not hmac.compare_digest(held[0], digest):
            return None
        if self._not_after:
            ends = self._not_after.get(digest)
            if ends is not None and time.time() >= ends:
                return None
        return held[1]

    def add(
        self,
        token: str,
        factory: ServerFactory | None = None,
        *,
        label: str | None = None,
        plan: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        not_after: float | None = None,
    ) -> str:
        """Register a token; returns its tenant id.

        Args:
            token: the bearer token (kept only as a digest).
            factory: the tenant's server factory; None to take the one `plans` gives `plan`.
            label: the tenant id to use, instead of one derived from the token's digest.
            plan: the tenant's plan name, kept with it (and naming its factory when none is given).
            metadata: a JSON object kept with the tenant (`Tenant.metadata`).
            not_after: wall-clock time (seconds since the epoch) from which the token gets 401.

        Raises `ValueError` if the token is registered (use `update`), the label is taken or malformed,
        no factory is given and the plan names none, the metadata is not JSON, or the token is empty or
        has whitespace; `TypeError` if the factory is not callable."""
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("a bearer token must be non-empty and contain no whitespace")
        given = self._factory_for(factory, plan)
        if label is not None and not _LABEL.match(label):
            raise ValueError("label must be 1-64 characters of letters, digits and ._:@-")
        digest = self._store.digest(token)
        tenant_id = label if label is not None else "tok-" + digest.hex()[:12]
        record = TenantRecord(tenant_id=tenant_id, label=label, plan=plan, metadata=dict(metadata or {}))
        try:
            change = self._store.add_nowait(record, Credential(digest=digest, tenant_id=tenant_id, not_after=not_after))
        except TypeError:
            raise ValueError("metadata must be a JSON object") from None
        self._apply(change, given)
        return tenant_id

    def remove(
        self, token: str, *, policy: SessionPolicy = "close", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> bool:
        """Unregister a token; False if it was not registered. Its requests get 401 from now on."""
        _check_policy(policy, drain_timeout)
        digest = self._store.digest(token)
        tenant = self._known(digest)
        if tenant is None:
            return False
        if any(other is tenant for key, (_, other) in self._by_digest.items() if key != digest):
            change = self._store.remove_credential_nowait(digest)  # one of its tokens: the tenant stays
        else:
            change = self._store.remove_nowait(tenant.tenant_id, policy=policy, drain_timeout=drain_timeout)
        if change is not None:
            self._apply(change)
        return change is not None

    def update(
        self,
        token: str,
        factory: ServerFactory | None = None,
        *,
        plan: str | None = None,
        policy: SessionPolicy = "drain",
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> bool:
        """Replace a token's factory (given, or by `plan`); False if it was not registered. New sessions
        get the new one. A `plan` given replaces the tenant's plan; else it keeps its own."""
        _check_policy(policy, drain_timeout)
        given = self._factory_for(factory, plan)
        tenant = self._known(self._store.digest(token))
        if tenant is None or tenant.record is None:
            return False
        record = replace(tenant.record, plan=plan if plan is not None else tenant.record.plan)
        change = self._store.replace_nowait(record, policy=policy, drain_timeout=drain_timeout)
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
        return len(self._ids)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(list(self._ids.values()))

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.has(token)

    def __repr__(self) -> str:
        return f"Tenants({sorted(self._ids)!r})"

    # -- the local index ---------------------------------------------------------------------------

    def _known(self, digest: bytes) -> Tenant | None:
        """The tenant holding the token of `digest`, expired or not (an expired token can be removed)."""
        held = self._by_digest.get(digest)
        return held[1] if held is not None and hmac.compare_digest(held[0], digest) else None

    def _factory_for(self, factory: ServerFactory | None, plan: str | None) -> ServerFactory:
        if factory is not None:
            _check_factory(factory, "factory")
            return factory
        if plan is None or plan not in self._plans:
            raise ValueError(f"no factory given, and no plan of `plans` named {plan!r}")
        return self._plans[plan]

    def _apply(self, change: TenantChange, factory: ServerFactory | None = None) -> None:
        """Bring the local index to `change`, then tell the observers. `factory` is one given in code;
        without it the record's plan names it (a mirror of a shared store passes none)."""
        record = change.record
        self._version = change.version
        if change.kind == "added":
            first = change.credentials[0]
            tenant = Tenant(
                record.tenant_id,
                first.digest,
                factory or self._factory_for(None, record.plan),
                labelled=record.label is not None,
                generation=record.generation,
                record=record,
            )
            self._ids[record.tenant_id] = tenant
            self._hold(tenant, first)
            for observer in self._observers:
                observer.tenant_added(tenant)
        elif change.kind == "updated":
            tenant = self._ids[record.tenant_id]
            tenant.factory = factory or self._factory_for(None, record.plan)
            tenant.generation, tenant.record = record.generation, record
            for observer in self._observers:
                observer.tenant_updated(tenant, change.policy, change.drain_timeout)
        elif change.kind == "removed":
            tenant = self._ids.pop(record.tenant_id)
            for credential in change.credentials:
                self._release(credential.digest)
            for observer in self._observers:
                observer.tenant_removed(tenant, change.policy, change.drain_timeout)
        elif change.kind == "credential_set":
            self._hold(self._ids[record.tenant_id], change.credentials[0])
        elif change.kind == "credential_removed":
            self._release(change.credentials[0].digest)
        else:  # pragma: no cover - every ChangeKind is handled above
            raise ValueError(f"unknown change kind {change.kind!r}")

    def _hold(self, tenant: Tenant, credential: Credential) -> None:
        self._by_digest[credential.digest] = (credential.digest, tenant)
        if credential.not_after is not None:
            self._not_after[credential.digest] = credential.not_after
        else:
            self._not_after.pop(credential.digest, None)

    def _release(self, digest: bytes) -> None:
        self._by_digest.pop(digest, None)
        self._not_after.pop(digest, None)


def _check_factory(factory: object, what: str) -> None:
    if not callable(factory):
        raise TypeError(f"{what} must be a callable returning a Server or MCPServer")


def _check_policy(policy: str, drain_timeout: float) -> None:
    if policy not in ("drain", "close"):
        raise ValueError("policy must be 'drain' or 'close'")
    if drain_timeout < 0:
        raise ValueError("drain_timeout must not be negative")
