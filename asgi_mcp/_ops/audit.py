"""Audit records: one per `tools/call` (whatever its outcome) and one per refused request.

Each record goes to the event hub (`audit` listeners) and to the `asgi_mcp.audit` logger at INFO.
A record names the tenant by id, the session, the client's name and version, the tool, the
outcome and the duration; never a token. Arguments and results are left out unless the operator
opts in, and then pass through the redaction hook first. Nothing is built when nobody listens and
the logger is off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from .lifecycle import Audit, EventHub

__all__ = ["AuditPolicy"]

audit_logger = logging.getLogger("asgi_mcp.audit")

Redactor = Callable[[str, Any, Any], "tuple[Any, Any]"]
"""`redact(tool, arguments, result) -> (arguments, result)`: what the record keeps of each."""


@dataclass(frozen=True)
class AuditPolicy:
    """What audit records may carry beyond who, what, when and how it ended.

    Args:
        include_arguments: put each call's arguments in the record (after `redact`).
        include_results: put each call's result (or error) in the record (after `redact`).
        redact: called with (tool name, arguments, result); returns what to keep of both. Use it to
            drop secrets and personal data: tool arguments may carry either.
    """

    include_arguments: bool = False
    include_results: bool = False
    redact: Redactor | None = None


class Auditor:
    def __init__(self, hub: EventHub, policy: AuditPolicy | None) -> None:
        self._hub = hub
        self.policy = policy or AuditPolicy()
        self.rate_limited = 0

    @property
    def active(self) -> bool:
        # `runtime.tool_observer` has the same test inline.
        return bool(self._hub.subscriptions.get("audit")) or audit_logger.isEnabledFor(logging.INFO)

    def tool_call(
        self,
        *,
        tenant_id: str | None,
        session_id: str | None,
        client: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        outcome: Mapping[str, Any],
        duration: float,
    ) -> None:
        if not self.active:
            return
        tool = str((params or {}).get("name", ""))
        error: Any = outcome.get("error")
        result: Any = outcome.get("result")
        if error is not None:
            kind = "error"
        elif isinstance(result, dict) and cast("dict[str, Any]", result).get("isError"):
            kind = "tool_error"
        else:
            kind = "ok"
        arguments: Any = (params or {}).get("arguments") if self.policy.include_arguments else None
        kept: Any = None
        if self.policy.include_results:
            kept = outcome.get("result") if error is None else error
        if self.policy.redact is not None and (self.policy.include_arguments or self.policy.include_results):
            redacted: tuple[Any, Any] = self.policy.redact(tool, arguments, kept)
            arguments, kept = redacted
        self._deliver(
            Audit(
                time=time.time(),
                tenant_id=tenant_id,
                session_id=session_id,
                client_name=_text(client, "name"),
                client_version=_text(client, "version"),
                method="tools/call",
                tool=tool,
                outcome=kind,
                duration=duration,
                arguments=arguments,
                result=kept,
            )
        )

    def refused(
        self, *, tenant_id: str | None, session_id: str | None, status: int, reason: str, rate_limited: bool
    ) -> None:
        if rate_limited:
            self.rate_limited += 1
        if not self.active:
            return
        self._deliver(
            Audit(
                time=time.time(),
                tenant_id=tenant_id,
                session_id=session_id,
                client_name=None,
                client_version=None,
                method=None,
                tool=None,
                outcome="rate_limited" if rate_limited else "refused",
                duration=0.0,
                status=status,
                reason=reason,
            )
        )

    def _deliver(self, record: Audit) -> None:
        self._hub.emit(record)
        if audit_logger.isEnabledFor(logging.INFO):
            fields = {name: getattr(record, name) for name in record.__slots__ if name != "name"}
            audit_logger.info(
                "%s %s tenant=%s session=%s outcome=%s",
                record.method or "request",
                record.tool or "-",
                record.tenant_id or "-",
                record.session_id or "-",
                record.outcome,
                extra={"audit": fields},
            )


def _text(client: Mapping[str, Any] | None, key: str) -> str | None:
    value = client.get(key) if client is not None else None
    return value if isinstance(value, str) else None
