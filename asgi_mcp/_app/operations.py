"""The app's operator features, in one place the request path calls into: rate limits, the
authorization lifetime of exchanges, token expiry, audit records and their counters.

`McpApp` makes an `Operations` only when something needs it (tenants, a token verifier, rate
limits or audit), so an app with none of these pays one `is None` test per request.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken

from .._auth.principal import Principal
from .._core.asgi import Send
from .._core.errors import ProtocolError, TooManyRequests
from .._core.jsonrpc import Message
from .._ops.audit import Auditor, AuditPolicy
from .._ops.lifecycle import EventHub, TokenExpired
from .._tenancy.grants import Grants, Hold
from .._tenancy.limits import RateLimits
from .._tenancy.servers import TenantServers
from .._tenancy.tenants import CredentialEnd, Tenant, Tenants

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp")

# The token a request authenticated with, while it runs: (tenant id, digest). Read when a session
# opens, to bind the session to that token.
current_credential: contextvars.ContextVar[tuple[str, bytes] | None] = contextvars.ContextVar(
    "asgi_mcp_credential", default=None
)
# How often tokens are checked for expiry when none is due sooner (streams of a token with a known
# expiry end at that moment by their own deadline; this bounds session ends and rotations' grace).
EXPIRY_PERIOD = 1.0


class Operations:
    def __init__(
        self,
        hub: EventHub,
        *,
        tenants: Tenants | None,
        tenant_servers: TenantServers | None,
        rate_limits: RateLimits | None,
        audit: AuditPolicy | None,
    ) -> None:
        self.hub = hub
        self.tenants = tenants
        self.tenant_servers = tenant_servers
        self.rate_limits = rate_limits
        # Take the request's rate-limit tokens; raises (or returns an awaitable raising) 429. The
        # limiter's own method: one call per request.
        self.limit: Callable[[Principal, Message], Awaitable[None] | None] = (
            rate_limits.limiter(tenants).limit if rate_limits is not None else _unlimited
        )
        self.auditor = Auditor(hub, audit)
        self.grants = Grants()
        self.verified_expired = 0
        self._end_session: Callable[[str, str], bool] | None = None
        self._wake = anyio.Event()
        if tenant_servers is not None:
            tenant_servers.on_credential_ended = self._credential_ended

    @classmethod
    def needed(
        cls,
        hub: EventHub,
        tenants: Tenants | None,
        tenant_servers: TenantServers | None,
        rate_limits: RateLimits | None,
        audit: AuditPolicy | None,
        *,
        verified: bool,
    ) -> Operations | None:
        """The app's operations, or None when nothing needs them (no tokens, no limits, no audit
        policy): such an app pays nothing for them per request."""
        if tenants is None and not verified and rate_limits is None and audit is None:
            return None
        return cls(hub, tenants=tenants, tenant_servers=tenant_servers, rate_limits=rate_limits, audit=audit)

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self, end_session: Callable[[str, str], bool]) -> None:
        self._end_session = end_session

    def detach(self) -> None:
        self._end_session = None
        self._wake.set()  # `expire_forever` returns

    async def expire_forever(self) -> None:
        """End tokens when their time comes (their `not_after`, a rotation's grace)."""
        tenants = self.tenants
        if tenants is None:
            return
        while self._end_session is not None:
            due = tenants.expire()
            delay = EXPIRY_PERIOD if due is None else min(EXPIRY_PERIOD, max(0.0, due - tenants.clock()))
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()

    def _credential_ended(
        self, tenant: Tenant, digest: bytes | None, reason: CredentialEnd, drain_timeout: float | None
    ) -> None:
        # A removal the operator lets drain ends its exchanges at the drain deadline, as its sessions.
        drain_until = None if drain_timeout is None else anyio.current_time() + drain_timeout
        sessions = self.grants.revoke(tenant.tenant_id, digest, drain_until=drain_until)
        if digest is not None and self._end_session is not None:
            for session_id in sessions:
                self._end_session(session_id, "token_expired" if reason != "token_removed" else reason)

    # -- per request ----------------------------------------------------------------------------

    @staticmethod
    def guards(tenant_id: str | None, access: AccessToken | None) -> bool:
        """Whether an exchange has an authorization that can end: a tenant token (it can be removed
        or rotated out, and may expire) or a verified token with an expiry."""
        return tenant_id is not None or (access is not None and access.expires_at is not None)

    @contextmanager
    def hold(self, principal: Principal, access: AccessToken | None, send: Send) -> Generator[Hold, None, None]:
        """Run an exchange under its token's authorization; the hold's `send` is the one to use."""
        tenant_id, credential = principal.tenant_id, principal.credential
        expires_at, wall = None, time.time
        if credential is not None:
            expires_at = credential[1]
            if self.tenants is not None:
                wall = self.tenants.clock
        elif access is not None and access.expires_at is not None:
            expires_at = float(access.expires_at)
        deadline = math.inf if expires_at is None else anyio.current_time() + (expires_at - wall())
        digest = credential[0] if credential is not None else None
        token = current_credential.set((tenant_id, digest) if tenant_id is not None and digest is not None else None)
        try:
            with self.grants.hold(tenant_id, digest, send, deadline) as held:
                yield held
        finally:
            current_credential.reset(token)
        if held.expired and credential is None:
            self.verified_expired += 1
            self.hub.emit(TokenExpired(tenant_id=None, reason="verified_expiry"))

    def session_used(self, session_id: str | None, tenant_id: str | None) -> None:
        bound = current_credential.get()
        if session_id is not None and bound is not None and tenant_id is not None:
            self.grants.used_session(session_id, tenant_id, bound[1])

    def session_opened(self, session_id: str) -> None:
        bound = current_credential.get()
        if bound is not None:
            self.grants.opened_session(session_id, bound[0], bound[1])

    def session_ended(self, session_id: str) -> None:
        self.grants.forget_session(session_id)

    def tool_called(
        self,
        tenant_id: str | None,
        session_id: str | None,
        client: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        outcome: Mapping[str, Any],
        duration: float,
    ) -> None:
        self.auditor.tool_call(
            tenant_id=tenant_id, session_id=session_id, client=client, params=params, outcome=outcome, duration=duration
        )

    def refused(self, tenant_id: str | None, session_id: str | None, error: ProtocolError) -> None:
        self.auditor.refused(
            tenant_id=tenant_id,
            session_id=session_id,
            status=error.status,
            reason=error.reason,
            rate_limited=isinstance(error, TooManyRequests),
        )

    @staticmethod
    def no_stats() -> dict[str, int]:
        """The counters of an app that has no operations."""
        return {"rate_limited": 0, "tokens_rotated": 0, "tokens_expired": 0}

    def stats(self) -> dict[str, int]:
        servers = self.tenant_servers
        return {
            "rate_limited": self.auditor.rate_limited,
            "tokens_rotated": servers.rotated if servers is not None else 0,
            "tokens_expired": (servers.expired if servers is not None else 0) + self.verified_expired,
        }


def _unlimited(principal: Principal, message: Message) -> None:
    return None
