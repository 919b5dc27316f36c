"""The session directory port (legacy era): who owns each session, and what it negotiated.

A record is written before the `initialize` answer leaves and forgotten when the session ends, so any
worker can tell whether a session exists, whose it is (the principal key must match exactly, else the
session is not found) and rebuild it from its initialize parameters. The session table (`_core`) stays
the worker's own view of the sessions it holds; the directory is what workers share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

__all__ = ["InMemorySessionDirectory", "SessionDirectory", "SessionRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """One legacy session, as data.

    Args:
        session_id: the `Mcp-Session-Id`.
        owner: the principal key of who opened it (a digest-based name, never a token).
        tenant_id: its tenant, or None in an app without tenants.
        protocol_version: the version negotiated by `initialize`.
        client_capabilities: the client's capabilities, as sent (a JSON object).
        initialize_params: the whole `initialize` params, as sent (a JSON object).
        created_at: wall-clock time (seconds since the epoch) it was opened.
        last_seen: wall-clock time of its last recorded activity.
        stream_tag: the secret prefix of its streams' ids in the event store, so a worker that adopts
            the session replays its events (`_ports.replay.EventLog`); "" when it has none.
    """

    session_id: str
    owner: str
    tenant_id: str | None
    protocol_version: str
    client_capabilities: Mapping[str, Any] = field(default_factory=lambda: dict[str, Any]())
    initialize_params: Mapping[str, Any] = field(default_factory=lambda: dict[str, Any]())
    created_at: float = 0.0
    last_seen: float = 0.0
    stream_tag: str = ""

    def to_json(self) -> str:
        """The record as JSON text: how a shared directory keeps it. Raises TypeError for non-JSON values."""
        return json.dumps(
            {
                "session_id": self.session_id,
                "owner": self.owner,
                "tenant_id": self.tenant_id,
                "protocol_version": self.protocol_version,
                "client_capabilities": dict(self.client_capabilities),
                "initialize_params": dict(self.initialize_params),
                "created_at": self.created_at,
                "last_seen": self.last_seen,
                "stream_tag": self.stream_tag,
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionRecord:
        fields = cast("dict[str, Any]", json.loads(text))
        return cls(**fields)


class SessionDirectory(Protocol):
    """Where session records live. Every method may reach a remote store, so every one is async."""

    async def record(self, record: SessionRecord) -> None:
        """Store (or overwrite) the record of `record.session_id`, under its tenant."""
        ...

    async def lookup(self, session_id: str) -> SessionRecord | None: ...

    async def touch(self, session_id: str, now: float) -> bool:
        """Move `last_seen` forward to `now` (never back); False if there is no such session.
        Not meant for every request: a worker holding the session knows it is alive."""
        ...

    async def forget(self, session_id: str) -> bool:
        """Drop the record; False if there was none. Idempotent."""
        ...

    async def sessions_of(self, tenant_id: str | None) -> frozenset[str]:
        """The ids of the tenant's recorded sessions (None: the sessions of an app without tenants)."""
        ...


class InMemorySessionDirectory:
    """The process-local `SessionDirectory`. Records are kept as their JSON text (copies out, nothing
    in that could not travel to another process)."""

    def __init__(self) -> None:
        self._records: dict[str, str] = {}
        self._tenants: dict[str, str | None] = {}  # session id -> tenant id, to keep `_by_tenant` exact
        self._by_tenant: dict[str | None, set[str]] = {}

    async def record(self, record: SessionRecord) -> None:
        text = record.to_json()  # first: a record that cannot be stored changes nothing
        self._unindex(record.session_id)
        self._records[record.session_id] = text
        self._tenants[record.session_id] = record.tenant_id
        self._by_tenant.setdefault(record.tenant_id, set()).add(record.session_id)

    async def lookup(self, session_id: str) -> SessionRecord | None:
        text = self._records.get(session_id)
        return SessionRecord.from_json(text) if text is not None else None

    async def touch(self, session_id: str, now: float) -> bool:
        text = self._records.get(session_id)
        if text is None:
            return False
        stored = SessionRecord.from_json(text)
        if now > stored.last_seen:
            self._records[session_id] = replace(stored, last_seen=now).to_json()
        return True

    async def forget(self, session_id: str) -> bool:
        if self._records.pop(session_id, None) is None:
            return False
        self._unindex(session_id)
        return True

    async def sessions_of(self, tenant_id: str | None) -> frozenset[str]:
        return frozenset(self._by_tenant.get(tenant_id, ()))

    def _unindex(self, session_id: str) -> None:
        if session_id not in self._tenants:
            return
        tenant_id = self._tenants.pop(session_id)
        sessions = self._by_tenant[tenant_id]
        sessions.discard(session_id)
        if not sessions:
            del self._by_tenant[tenant_id]

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"InMemorySessionDirectory({len(self._records)} sessions)"
