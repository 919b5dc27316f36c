"""Who hears of a `tools/call` once the kernel has finished it: its audit record and `tool_called`.

`tool_observer` makes the observer for a caller (tenant, legacy session); a legacy session's is made
once with the session, and the modern era's, per tenant, once by `ModernObservers` rather than on
every request.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from .._kernel.context import RequestObserver
from .._legacy.endpoint import LegacySession
from .._ops.audit import audit_logger
from .._ops.lifecycle import EventHub, ToolCalled
from .operations import Operations

__all__ = ["ModernObservers", "legacy_client", "tool_observer"]

# Tenants whose modern observer is kept; past it the kept ones are dropped and made again as needed
# (a registry whose tenants come and go must not grow this without bound).
_TENANTS_KEPT: Final = 4096


class ModernObservers:
    """The modern era's observers: each tenant's made once (sessionless: nothing else differs)."""

    __slots__ = ("_hub", "_operations", "_tenants", "anonymous")

    def __init__(self, hub: EventHub, operations: Operations | None) -> None:
        self._hub = hub
        self._operations = operations
        self.anonymous: Final = tool_observer(hub, None, None, operations)  # no tenant
        self._tenants: dict[str, RequestObserver] = {}

    def of_tenant(self, tenant_id: str) -> RequestObserver:
        observer = self._tenants.get(tenant_id)
        if observer is None:
            if len(self._tenants) >= _TENANTS_KEPT:
                self._tenants.clear()
            observer = self._tenants[tenant_id] = tool_observer(self._hub, tenant_id, None, self._operations)
        return observer


def tool_observer(
    hub: EventHub,
    tenant_id: str | None,
    session_id: str | None,
    operations: Operations | None,
    client: Callable[[], Mapping[str, Any] | None] | None = None,
) -> RequestObserver:
    """Per `tools/call` the kernel finishes: the audit record (when audit is on) and `tool_called`
    (when anyone listens). `client` reads the session's client info (legacy); without it, a
    2026-07-28 request carries its own in `_meta`."""

    def observe(method: str, params: Mapping[str, Any] | None, started: float, outcome: dict[str, Any]) -> None:
        if method != "tools/call":
            return
        # `Auditor.active` (the operations' hub is this one), inline: this runs per tool call. The
        # client info is read only for a record.
        if operations is not None and (hub.subscriptions.get("audit") or audit_logger.isEnabledFor(logging.INFO)):
            info = client() if client is not None else _modern_client(params)
            operations.tool_called(tenant_id, session_id, info, params, outcome, time.perf_counter() - started)
        if not hub.subscriptions.get("tool_called"):  # `has_listeners`, inline
            return
        error: dict[str, Any] | None = outcome.get("error")
        result: dict[str, Any] | None = outcome.get("result")
        tool_failed = result is not None and bool(result.get("isError"))
        hub.emit(
            ToolCalled(
                tool_name=str((params or {}).get("name", "")),
                tenant_id=tenant_id,
                session_id=session_id,
                duration=time.perf_counter() - started,
                success=error is None and not tool_failed,
                error=str(error.get("message")) if error is not None else ("tool_error" if tool_failed else None),
            )
        )

    return observe


def legacy_client(session_ref: weakref.ref[LegacySession]) -> Callable[[], Mapping[str, Any] | None]:
    """Reads the session's client info from `initialize`. Weakly: the session's dispatcher holds the
    observer, and an ended session must leave no reference cycle behind."""

    def client() -> Mapping[str, Any] | None:
        session = session_ref()
        params = session.connection.client_params if session is not None else None
        return params.client_info.model_dump() if params is not None else None

    return client


def _modern_client(params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    meta: Any = params.get("_meta") if params is not None else None
    if not isinstance(meta, dict):
        return None
    info: Any = cast("dict[str, Any]", meta).get("io.modelcontextprotocol/clientInfo")
    return cast("dict[str, Any]", info) if isinstance(info, dict) else None
