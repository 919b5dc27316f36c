"""Tenants: each bearer token maps to its own MCP server, built by a factory, changed at runtime.

`Tenants` is the in-memory registry. It keeps only SHA-256 digests of tokens (compared in constant
time) and knows each tenant by a non-secret id: a caller-given label, else a digest prefix. That id
is what stats, events and logs show. The registry is the small interface a shared backend would
replace; the app subscribes to its changes to end or drain sessions and stop servers.
"""

from __future__ import annotations

import hashlib
import math
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
    # The rate-limit plan it was registered with (see `RateLimits.plans`).
    plan: str | None = None
    # Set by the app: the state of the server built from the current factory.
    runtime: dict[str, Any] = field(default_factory=lambda: dict[str, Any]())

    @property
    def owner(self) -> str:
        """Sessions bind to this; it names the tenant's first credential without revealing it, and
        stays the same when the token is rotated."""
        return "t:" + self.digest.hex()


CredentialEnd = Literal["token_removed", "rotated", "expired"]


class RegistryObserver(Protocol):
    def tenant_added(self, tenant: Tenant) -> None: ...

    def tenant_removed(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None: ...

    def tenant_updated(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None: ...

    def token_rotated(self, tenant: Tenant, grace: float) -> None: ...

    def credential_ended(self, tenant: Tenant, digest: bytes, reason: CredentialEnd) -> None:
        """One token of a tenant that keeps others stopped working (`remove`d, rotated out, expired)."""
        ...


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
        clock: wall-clock seconds, against which `not_after` and rotation grace count. Sans-IO
            itself, the registry gets `time.time` from the app serving it when none is given.

    Each method is synchronous and safe to call from any task while the app serves requests: the
    app reacts to changes (ending or draining sessions, retiring servers) before the call returns.
    A tenant may hold several tokens at once (during a rotation's grace period); each may expire.
    """

    def __init__(
        self, tokens: Mapping[str, ServerFactory] | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._by_digest: dict[bytes, Tenant] = {}
        self._not_after: dict[bytes, tuple[float, CredentialEnd]] = {}
        self._ids: dict[str, Tenant] = {}
        self._observers: list[RegistryObserver] = []
        self._clock = clock
        for token, factory in (tokens or {}).items():
            self.add(token, factory)

    def subscribe(self, observer: RegistryObserver) -> None:
        self._observers.append(observer)

    def lookup(self, token: str) -> Tenant | None:
        """The tenant of `token`, or None (unknown or expired). Only digests are kept; they are
        compared in constant time."""
        found = self.credential(token)
        return found[0] if found is not None else None

    def credential(self, token: str) -> tuple[Tenant, bytes, float | None] | None:
        """The tenant of `token`, its digest, and the wall-clock time it stops working (None: never)."""
        digest = token_digest(token)
        tenant = self._by_digest.get(digest)
        if tenant is None:
            return None
        # Found by its SHA-256 digest, so a lookup's timing reveals at most a digest prefix.
        expiry = self._not_after.get(digest)
        if expiry is None:
            return tenant, digest, None
        if self.clock() >= expiry[0]:
            self._end_credential(digest, expiry[1])
            return None
        return tenant, digest, expiry[0]

    def add(
        self,
        token: str,
        factory: ServerFactory,
        *,
        label: str | None = None,
        plan: str | None = None,
        not_after: float | None = None,
    ) -> str:
        """Register a token; returns its tenant id. Raises `ValueError` if the token is registered
        (use `update`), the label is taken or malformed, or the token is empty or has whitespace.

        `plan` names the tenant's rate limits (`RateLimits.plans`); `not_after` is the wall-clock
        time (`time.time()` seconds) at which the token stops working: its requests get 401 and
        its live streams end."""
        digest = self._new_digest(token)
        if not callable(factory):
            raise TypeError("factory must be a callable returning a Server or MCPServer")
        _check_time(not_after)
        if label is not None:
            if not _LABEL.match(label):
                raise ValueError("label must be 1-64 characters of letters, digits and ._:@-")
            tenant_id = label
        else:
            tenant_id = "tok-" + digest.hex()[:12]
        if tenant_id in self._ids:
            raise ValueError(f"tenant id {tenant_id!r} is already in use")
        tenant = Tenant(tenant_id, digest, factory, labelled=label is not None, plan=plan)
        self._by_digest[digest] = tenant
        if not_after is not None:
            self._not_after[digest] = (not_after, "expired")
        self._ids[tenant_id] = tenant
        for observer in self._observers:
            observer.tenant_added(tenant)
        return tenant_id

    def rotate_token(self, old: str, new: str, *, grace: float = 300.0, not_after: float | None = None) -> str:
        """Give `old`'s tenant the token `new`: same tenant, sessions and rate limits. Both work for
        `grace` seconds; then `old` gets 401 and the streams and sessions it opened end (0: at once).
        `not_after` is the new token's own expiry. Returns the tenant id; `KeyError` if `old` is
        not registered, `ValueError` if `new` is."""
        found = self.credential(old)
        if found is None:
            raise KeyError("token is not registered")
        if grace < 0 or math.isnan(grace):
            raise ValueError("grace must not be negative")
        _check_time(not_after)
        tenant, old_digest, old_expiry = found
        digest = self._new_digest(new)
        self._by_digest[digest] = tenant
        if not_after is not None:
            self._not_after[digest] = (not_after, "expired")
        for observer in self._observers:
            observer.token_rotated(tenant, grace)
        ends = self.clock() + grace
        if grace == 0:
            self._end_credential(old_digest, "rotated")
        elif old_expiry is None or ends < old_expiry:
            self._not_after[old_digest] = (ends, "rotated")
        return tenant.tenant_id

    def expire(self) -> float | None:
        """End every token past its time now; returns the earliest time one will end (None: none).

        Lookups expire tokens lazily; the app calls this at that time too, so streams and sessions
        of a token nobody presents any more end as well."""
        if not self._not_after:
            return None
        now = self.clock()
        for digest, (at, reason) in list(self._not_after.items()):
            if at <= now:
                self._end_credential(digest, reason)
        return min((at for at, _ in self._not_after.values()), default=None)

    @property
    def clock(self) -> Callable[[], float]:
        if self._clock is None:
            raise RuntimeError("token expiry needs a clock: pass Tenants(clock=time.time), or serve it with McpApp")
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    @property
    def has_clock(self) -> bool:
        return self._clock is not None

    def _new_digest(self, token: str) -> bytes:
        if not token or any(ch.isspace() for ch in token):
            raise ValueError("a bearer token must be non-empty and contain no whitespace")
        digest = token_digest(token)
        if digest in self._by_digest:
            raise ValueError("token is already registered; use update() to replace its factory")
        return digest

    def _end_credential(self, digest: bytes, reason: CredentialEnd) -> None:
        """One token stops working: the tenant goes with its last one (sessions closed)."""
        tenant = self._by_digest.pop(digest, None)
        self._not_after.pop(digest, None)
        if tenant is None:
            return
        if any(other is tenant for other in self._by_digest.values()):
            for observer in self._observers:
                observer.credential_ended(tenant, digest, reason)
            return
        self._drop(tenant, "close", 0.0, reason)

    def remove(
        self, token: str, *, policy: SessionPolicy = "close", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> bool:
        """Unregister a token; False if it was not registered. Its requests get 401 from now on."""
        _check_policy(policy, drain_timeout)
        found = self.credential(token)
        if found is None:
            return False
        tenant, digest, _ = found
        del self._by_digest[digest]
        self._not_after.pop(digest, None)
        if any(other is tenant for other in self._by_digest.values()):
            # One of several tokens (a rotation's old one, cut short): the tenant stays.
            for observer in self._observers:
                observer.credential_ended(tenant, digest, "token_removed")
            return True
        self._drop(tenant, policy, drain_timeout, "token_removed")
        return True

    def _drop(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float, reason: CredentialEnd) -> None:
        for digest in [d for d, t in self._by_digest.items() if t is tenant]:
            del self._by_digest[digest]
            self._not_after.pop(digest, None)
        self._ids.pop(tenant.tenant_id, None)
        tenant.runtime["ended_by"] = reason
        for observer in self._observers:
            observer.tenant_removed(tenant, policy, drain_timeout)

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
        return len(self._ids)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(list(self._ids.values()))

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.has(token)

    def __repr__(self) -> str:
        return f"Tenants({sorted(self._ids)!r})"


def _check_time(not_after: float | None) -> None:
    if not_after is not None and math.isnan(not_after):
        raise ValueError("not_after must be a time in seconds")


def _check_policy(policy: str, drain_timeout: float) -> None:
    if policy not in ("drain", "close"):
        raise ValueError("policy must be 'drain' or 'close'")
    if drain_timeout < 0:
        raise ValueError("drain_timeout must not be negative")
