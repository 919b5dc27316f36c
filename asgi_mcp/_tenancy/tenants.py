"""Tenants: each bearer token maps to its own MCP server, built by a factory, changed at runtime.

`Tenants` is the registry the app reads on every request: a local index from token digest to
`Tenant`, looked up synchronously and compared in constant time. What it registers is written to a
tenant store (`_ports.tenant_store`, in memory here) as data: a `TenantRecord` (tenant id, label,
plan name, metadata) and a `Credential` per token (digest, expiry), never a token and never code.
Server factories stay in this process: given in code, or named by a plan from the `plans` catalogue.

Every change reaches the local index through one method, `_apply`, whatever wrote it; it is what a
worker mirroring a shared store calls for each change the store announces. A tenant is known by a
non-secret id: a caller-given label, else a digest prefix. That id is what stats, events and logs show.
A rotation's old token gets its grace's end as `not_after`; a token past it ends as a removal does.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Final

from .._ports.tenant_store import (
    Credential,
    InMemoryTenantStore,
    SessionPolicy,
    TenantChange,
    TenantRecord,
    TenantStore,
    token_digest,
)
from .freshness import DEFAULT_STALE_FOR, LocalCopy
from .tenant import CredentialEnd, RegistryObserver, ServerFactory, Tenant

__all__ = ["CredentialEnd", "RegistryObserver", "ServerFactory", "SessionPolicy", "Tenant", "Tenants"]

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


class Tenants:
    """Token registry, over an in-memory tenant store.

    Args:
        tokens: initial tokens and their factories.
        plans: plan names and their factories: `add` and `update` may name a plan instead of passing one.
            A plan name also selects the tenant's rate limits (`RateLimits.plans`).
        clock: wall-clock seconds against which `not_after` and a rotation's grace count
            (default `time.time`; a test passes one it moves by hand).
        store: a shared `TenantStore` (`RedisTenantStore`) this registry mirrors: every worker of a
            fleet sees its tokens, resolved through its own `plans`, and `tokens` must be empty
            (write to the store: `asgi-mcp tokens`). The app keeps the mirror in step while it runs.
        stale_for: with a `store`, seconds lookups are served from the local copy once the store is
            out of reach (60 by default); past that they fail closed, 503 with `Retry-After`, until
            the store answers and the copy is resynchronised. None: served from the copy for ever.

    Each method is synchronous and safe to call from any task while the app serves requests: the
    app reacts to changes (ending or draining sessions, retiring servers) before the call returns.
    A tenant may hold several tokens at once (during a rotation's grace period); each may expire.
    """

    def __init__(
        self,
        tokens: Mapping[str, ServerFactory] | None = None,
        *,
        plans: Mapping[str, ServerFactory] | None = None,
        clock: Callable[[], float] = time.time,
        store: TenantStore | None = None,
        stale_for: float | None = DEFAULT_STALE_FOR,
    ) -> None:
        if store is not None and tokens:
            raise ValueError("a registry mirroring a shared store takes its tokens from the store only")
        self.shared_store = store
        self._digest = store.digest if store is not None else token_digest
        self._plans = dict(plans or {})
        for plan, factory in self._plans.items():
            _check_factory(factory, f"plan {plan!r}")
        self._store = InMemoryTenantStore()
        # digest -> (the digest as stored, its tenant): a hit is compared again in constant time.
        self._by_digest: dict[bytes, tuple[bytes, Tenant]] = {}
        self._not_after: dict[bytes, float] = {}  # the tokens that expire: wall-clock time they stop
        self._rotated_out: set[bytes] = set()  # old tokens of a rotation, ending with its grace
        self.clock = clock
        self.local_copy = LocalCopy(stale_for, lambda: self.clock())
        self._ids: dict[str, Tenant] = {}
        self._observers: list[RegistryObserver] = []
        self._version = 0  # of the last change applied
        for token, factory in (tokens or {}).items():
            self.add(token, factory)

    def subscribe(self, observer: RegistryObserver) -> None:
        self._observers.append(observer)

    @property
    def version(self) -> int:
        """The store version of the last change applied (a mirror applies the next one only)."""
        return self._version

    def apply(self, change: TenantChange) -> None:
        """A change the shared store announced (see `_tenancy.mirror`): into the local index."""
        self._apply(change)

    def apply_version(self, version: int) -> None:
        """A mirror brought up to the store's snapshot at `version`."""
        self._version = version

    def held(self) -> dict[bytes, str]:
        """Every token digest held, with its tenant id (a mirror's resynchronisation compares them)."""
        return {digest: held[1].tenant_id for digest, held in self._by_digest.items()}

    def lookup(self, token: str) -> Tenant | None:
        """The tenant of `token`, or None (unknown, or expired). Only digests are kept (the store's:
        `InMemoryTenantStore.digest`); they are compared in constant time."""
        found = self.credential(token)
        return found[0] if found is not None else None

    def credential(self, token: str) -> tuple[Tenant, bytes, float | None] | None:
        """The tenant of `token`, its digest, and the wall-clock time it stops working (None: never).
        A token found past its time is ended now (as `expire` would) and gets None. A mirror whose
        store has been out of reach longer than `stale_for` raises `StoreUnavailable` (503)."""
        if self.local_copy.degraded:
            self.local_copy.check()
        digest = self._digest(token)
        held = self._by_digest.get(digest)
        if held is None or not hmac.compare_digest(held[0], digest):
            return None
        ends = self._not_after.get(digest) if self._not_after else None
        if ends is None:
            return held[1], digest, None
        if self.clock() >= ends:
            self._end_credential(digest)
            return None
        return held[1], digest, ends

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
        if self.shared_store is not None:
            raise ValueError("this registry mirrors a shared store: add the token there (asgi-mcp tokens add)")
        _check_token(token)
        given = self._factory_for(factory, plan)
        if label is not None and not _LABEL.match(label):
            raise ValueError("label must be 1-64 characters of letters, digits and ._:@-")
        _check_time(not_after)
        digest = self._digest(token)
        tenant_id = label if label is not None else "tok-" + digest.hex()[:12]
        record = TenantRecord(tenant_id=tenant_id, label=label, plan=plan, metadata=dict(metadata or {}))
        try:
            change = self._store.add_nowait(record, Credential(digest=digest, tenant_id=tenant_id, not_after=not_after))
        except TypeError:
            raise ValueError("metadata must be a JSON object") from None
        self._apply(change, given)
        return tenant_id

    def rotate_token(self, old: str, new: str, *, grace: float = 300.0, not_after: float | None = None) -> str:
        """Give `old`'s tenant the token `new`: same tenant, sessions and rate limits. Both work for
        `grace` seconds; then `old` gets 401 and the streams and sessions it opened end (0: at once).
        `not_after` is the new token's own expiry. Returns the tenant id; `KeyError` if `old` is
        not registered, `ValueError` if `new` is (or is empty or has whitespace)."""
        found = self.credential(old)
        if found is None:
            raise KeyError("token is not registered")
        if grace < 0 or math.isnan(grace):
            raise ValueError("grace must not be negative")
        _check_time(not_after)
        _check_token(new)
        tenant, old_digest, old_ends = found
        digest = self._digest(new)
        if self._known(digest) is not None:
            raise ValueError("token is already registered; use update() to replace its factory")
        change = self._store.set_credential_nowait(
            Credential(digest=digest, tenant_id=tenant.tenant_id, not_after=not_after)
        )
        if change is None:  # a mirror's tenant: its store is written elsewhere
            raise KeyError("token is not registered")
        self._apply(change)
        for observer in self._observers:
            observer.token_rotated(tenant, grace)
        ends = self.clock() + grace
        if grace == 0:
            self._end_credential(old_digest, "rotated")
        elif old_ends is None or ends < old_ends:
            self._rotated_out.add(old_digest)
            ending = Credential(digest=old_digest, tenant_id=tenant.tenant_id, not_after=ends)
            if (change := self._store.set_credential_nowait(ending)) is not None:
                self._apply(change)
        return tenant.tenant_id

    def expire(self) -> float | None:
        """End every token past its time now; returns the earliest time one will end (None: none).
        Lookups end tokens lazily; the app calls this too, for tokens nobody presents any more."""
        if not self._not_after:
            return None
        now = self.clock()
        for digest, ends in list(self._not_after.items()):
            if ends <= now:
                self._end_credential(digest)
        # Only times still to come: a mirror's expired token stays until its writer's removal arrives.
        return min((ends for ends in self._not_after.values() if ends > now), default=None)

    def remove(
        self, token: str, *, policy: SessionPolicy = "close", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> bool:
        """Unregister a token; False if it was not registered. Its requests get 401 from now on."""
        _check_policy(policy, drain_timeout)
        digest = self._digest(token)
        tenant = self._known(digest)
        if tenant is None:
            return False
        return self._end_credential(digest, "token_removed", policy, drain_timeout)

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
        tenant = self._known(self._digest(token))
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

    def _end_credential(
        self,
        digest: bytes,
        reason: CredentialEnd | None = None,
        policy: SessionPolicy = "close",
        drain_timeout: float = 0.0,
    ) -> bool:
        """One token stops working (`reason` None: its time came); the tenant goes with its last one.
        Written to the store, applied through `_apply`; False when the store holds no such token (a
        mirror's, whose store is written elsewhere)."""
        tenant = self._known(digest)
        if tenant is None:
            return False
        if reason is None:
            reason = "rotated" if digest in self._rotated_out else "expired"
        if any(other is tenant for key, (_, other) in self._by_digest.items() if key != digest):
            change = self._store.remove_credential_nowait(digest)  # one of its tokens: the tenant stays
        else:
            change = self._store.remove_nowait(tenant.tenant_id, policy=policy, drain_timeout=drain_timeout)
            if change is not None:
                tenant.runtime["ended_by"] = reason  # the app tells an expiry from a removal by it
        if change is None:
            return False
        self._apply(change, ended_by=reason)
        return True

    def _factory_for(self, factory: ServerFactory | None, plan: str | None) -> ServerFactory:
        if factory is not None:
            _check_factory(factory, "factory")
            return factory
        if plan is None or plan not in self._plans:
            raise ValueError(f"no factory given, and no plan of `plans` named {plan!r}")
        return self._plans[plan]

    def _apply(
        self, change: TenantChange, factory: ServerFactory | None = None, *, ended_by: CredentialEnd = "token_removed"
    ) -> None:
        """Bring the local index to `change`, then tell the observers. `factory` is one given in code;
        without it the record's plan names it (a mirror of a shared store passes none). `ended_by`:
        why a removed credential stopped working (a store's feed carries only removals)."""
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
            digest = change.credentials[0].digest
            self._release(digest)
            for observer in self._observers if record.tenant_id in self._ids else ():
                observer.credential_ended(self._ids[record.tenant_id], digest, ended_by)
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
        self._rotated_out.discard(digest)


def _check_factory(factory: object, what: str) -> None:
    if not callable(factory):
        raise TypeError(f"{what} must be a callable returning a Server or MCPServer")


def _check_token(token: str) -> None:
    if not token or any(ch.isspace() for ch in token):
        raise ValueError("a bearer token must be non-empty and contain no whitespace")


def _check_time(not_after: float | None) -> None:
    if not_after is not None and math.isnan(not_after):
        raise ValueError("not_after must be a time in seconds")


def _check_policy(policy: str, drain_timeout: float) -> None:
    if policy not in ("drain", "close"):
        raise ValueError("policy must be 'drain' or 'close'")
    if drain_timeout < 0:
        raise ValueError("drain_timeout must not be negative")
