"""Builds each tenant's server once, and retires it when the tenant's token is removed or updated.

The factory runs once per tenant generation even under concurrent first requests (single flight).
A server built for a factory that was replaced or removed while it was being built is never used.
Live sessions follow the caller's policy: `close` ends them now; `drain` keeps them on the old
server until they go idle (removed token) or until the drain deadline passes (both).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.abc

from .._core.errors import INTERNAL_ERROR, ConfigurationError, ProtocolError
from .._kernel.hosting import ServerHost
from .._ops.lifecycle import (
    EventHub,
    ServerRegistered,
    ServerRemoved,
    ServerUpdated,
    TokenAdded,
    TokenExpired,
    TokenRemoved,
    TokenRotated,
    TokenUpdated,
)
from .isolation import BusOwners, keep_results_private
from .listen_relay import ListenRelay
from .tenants import CredentialEnd, SessionPolicy, Tenant

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.tenancy")


class FactoryFailed(ProtocolError):
    def __init__(self) -> None:
        super().__init__(500, "Internal server error", code=INTERNAL_ERROR, reason="server factory failed")


class TenantRemoved(Exception):
    """The tenant's token was removed while its request waited for the server (the app answers 401)."""


class TenantSessions(Protocol):
    """What tenancy needs of the sessions a tenant holds; the legacy era's endpoint provides it.

    Defined here, on the side that uses it, so that tenancy never reaches into an era's tables.
    """

    def count_for(self, tenant_id: str) -> int:
        """Live sessions of the tenant."""
        ...

    def follow_tenant(self, tenant_id: str, *, close: bool, deadline: float, end_when_idle: bool, reason: str) -> None:
        """The tenant's token changed: end its sessions now (`close`), or drain them until `deadline`."""
        ...


class TenantServers:
    """The app's side of the tenant registry: server hosts per tenant, and reactions to changes."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._task_group: anyio.abc.TaskGroup | None = None
        self._sessions: TenantSessions | None = None
        self._hosts: dict[str, ServerHost] = {}  # tenant id -> host of its current generation
        self._building: dict[str, tuple[int, anyio.Event]] = {}
        self._last_name: dict[str, str] = {}
        # Set by the app: ends the streams and sessions of a token that stopped working.
        # (tenant, the token's digest or None for all, why, the drain timeout of a draining removal)
        self.on_credential_ended: Callable[[Tenant, bytes | None, CredentialEnd, float | None], None] | None = None
        self.rotated = 0
        self.expired = 0
        self._buses = BusOwners()
        self._warned_public: set[str] = set()
        # Set by the app's runtime while a fleet runs: each server built relays its listen events.
        self.relay: ListenRelay | None = None

    def attach(self, task_group: anyio.abc.TaskGroup, sessions: TenantSessions) -> None:
        self._task_group, self._sessions = task_group, sessions

    def detach(self) -> None:
        for host in self._hosts.values():
            host.stop()
        self._hosts.clear()
        self._task_group = self._sessions = self.relay = None

    @property
    def built(self) -> int:
        return len(self._hosts)

    async def host_for(self, tenant: Tenant) -> ServerHost:
        """The tenant's server, built on first use; concurrent first requests share one build."""
        while True:
            if tenant.runtime.get("removed"):
                raise TenantRemoved  # else a removed tenant's server would be rebuilt, and dropped, forever
            host = self._hosts.get(tenant.tenant_id)
            if host is not None:
                return host
            building = self._building.get(tenant.tenant_id)
            if building is not None and building[0] == tenant.generation:
                await building[1].wait()
                continue
            await self._build(tenant)

    async def _build(self, tenant: Tenant) -> None:
        assert self._task_group is not None
        generation, done = tenant.generation, anyio.Event()
        self._building[tenant.tenant_id] = (generation, done)
        try:
            try:
                server: Any = tenant.factory()
                if inspect.isawaitable(server):
                    server = await server
                host = ServerHost(server, label=tenant.tenant_id)
                sharing = self._buses.claim(tenant.tenant_id, host.server)
                if sharing is not None:
                    # One bus for two tenants would carry one's `subscriptions/listen` events to the other.
                    raise ConfigurationError(
                        f"the server built for tenant {tenant.tenant_id} shares its subscription bus with "
                        f"tenant {sharing}; each tenant's factory must build a server with a bus of its own"
                    )
                keep_results_private(host.server, tenant.tenant_id, self._warned_public)
                try:
                    await host.start(self._task_group)
                except BaseException:
                    # Cancelled (or failed) while its lifespan was entering: this host is never
                    # used, so its lifespan must not stay running until shutdown.
                    host.stop()
                    raise
            except Exception:
                # Logged with the tenant id only; the client gets a generic 500.
                logger.exception("server factory failed", extra={"tenant_id": tenant.tenant_id})
                raise FactoryFailed from None
            if tenant.generation != generation or tenant.runtime.get("removed"):
                host.stop()  # replaced or removed while building: never used
                return
            self._hosts[tenant.tenant_id] = host
            previous = self._last_name.get(tenant.tenant_id)
            self._last_name[tenant.tenant_id] = host.name
            now = time.time()
            if generation > 0 and tenant.runtime.get("updated_from") is not None:
                self._hub.emit(
                    ServerUpdated(
                        tenant_id=tenant.tenant_id,
                        old_server_name=previous,
                        new_server_name=host.name,
                        updated_at=now,
                    )
                )
                tenant.runtime.pop("updated_from", None)
            self._hub.emit(
                ServerRegistered(
                    tenant_id=tenant.tenant_id,
                    server_name=host.name,
                    server_version=host.version or None,
                    registered_at=now,
                )
            )
            if self.relay is not None:
                self.relay.bridge(tenant.tenant_id, host.server)
        finally:
            if self._building.get(tenant.tenant_id, (None,))[0] == generation:
                del self._building[tenant.tenant_id]
            done.set()

    # -- RegistryObserver ---------------------------------------------------------------------

    def tenant_added(self, tenant: Tenant) -> None:
        self._hub.emit(TokenAdded(tenant_id=tenant.tenant_id))

    def token_rotated(self, tenant: Tenant, grace: float) -> None:
        self.rotated += 1
        self._hub.emit(TokenRotated(tenant_id=tenant.tenant_id, grace=grace))

    def credential_ended(self, tenant: Tenant, digest: bytes, reason: CredentialEnd) -> None:
        if reason != "token_removed":
            self.expired += 1
            self._hub.emit(TokenExpired(tenant_id=tenant.tenant_id, reason=reason))
        if self.on_credential_ended is not None:
            self.on_credential_ended(tenant, digest, reason, None)

    def tenant_removed(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None:
        tenant.runtime["removed"] = True
        ended_by: CredentialEnd = tenant.runtime.get("ended_by", "token_removed")
        if ended_by != "token_removed":
            self.expired += 1
            self._hub.emit(TokenExpired(tenant_id=tenant.tenant_id, reason=ended_by))
        self._hub.emit(TokenRemoved(tenant_id=tenant.tenant_id, policy=policy))
        if self.on_credential_ended is not None:
            self.on_credential_ended(tenant, None, ended_by, drain_timeout if policy == "drain" else None)
        host = self._hosts.pop(tenant.tenant_id, None)
        active = self._sessions.count_for(tenant.tenant_id) if self._sessions is not None else 0
        reason = "token_removed" if ended_by == "token_removed" else "token_expired"
        self._sessions_follow(tenant, policy, drain_timeout, end_when_idle=True, reason=reason)
        if host is not None:
            self._hub.emit(
                ServerRemoved(
                    tenant_id=tenant.tenant_id,
                    server_name=host.name,
                    had_active_sessions=active > 0,
                    active_sessions=active,
                    removed_at=time.time(),
                )
            )
            host.retire()
        self._last_name.pop(tenant.tenant_id, None)
        self._buses.release(tenant.tenant_id)
        if self.relay is not None:
            self.relay.release(tenant.tenant_id)

    def tenant_updated(self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float) -> None:
        self._hub.emit(TokenUpdated(tenant_id=tenant.tenant_id, policy=policy))
        host = self._hosts.pop(tenant.tenant_id, None)
        tenant.runtime["updated_from"] = host.name if host is not None else None
        self._sessions_follow(tenant, policy, drain_timeout, end_when_idle=False, reason="token_updated")
        if host is not None:
            host.retire()

    def _sessions_follow(
        self, tenant: Tenant, policy: SessionPolicy, drain_timeout: float, *, end_when_idle: bool, reason: str
    ) -> None:
        if self._sessions is not None:
            deadline = anyio.current_time() + drain_timeout
            self._sessions.follow_tenant(
                tenant.tenant_id, close=policy == "close", deadline=deadline, end_when_idle=end_when_idle, reason=reason
            )
