"""The tenant store port: what the token registry keeps, where every worker could read it.

A store holds data only: per token digest, a `TenantRecord` (tenant id, label, plan name, metadata,
expiry, generation), a store-wide version that every write bumps by one, and a feed of the changes.
Server factories are code and stay in each worker: a record names a plan (or None, for a factory
given to one registry in code), and each worker resolves it from its own catalogue.

A worker mirrors the store: it subscribes to `changes()`, reads a `snapshot()`, applies the changes
newer than the snapshot's version in order, and starts again (resynchronises) after a gap in the
versions or a `SubscriptionCut`. `InMemoryTenantStore` is the process-local implementation that
`Tenants` uses; its `*_nowait` twins let the synchronous registry write without awaiting.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, cast

from .._core.errors import TenantConflict
from .fanout import Fanout

__all__ = [
    "ChangeKind",
    "InMemoryTenantStore",
    "SessionPolicy",
    "TenantChange",
    "TenantRecord",
    "TenantSnapshot",
    "TenantStore",
]

SessionPolicy = Literal["drain", "close"]
"""What happens to a tenant's live sessions when its token is removed or its factory replaced:
`close` ends them now (each with `session_ended`); `drain` lets them finish on the old server,
until they go idle or `drain_timeout` passes."""

ChangeKind = Literal["added", "updated", "removed"]


def token_digest(token: str) -> bytes:
    """SHA-256 of the token: what an in-process registry keys tokens by (a shared store keys them by HMAC)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantRecord:
    """One registered token, as data: nothing in it is code, nothing in it is the token.

    Args:
        digest: the token's digest (`TenantStore.digest`); the store's key.
        tenant_id: the non-secret name stats, events and logs show; unique in the store.
        label: the operator's label, when the tenant id is one (else the id is derived from the digest).
        plan: the plan name each worker resolves to a server factory; None for a factory given in code.
        metadata: the operator's JSON object about the tenant (read-only by convention).
        not_after: wall-clock time (seconds since the epoch) from which the token is refused; None: never.
        generation: bumped by the store on every `replace`: servers built for an older one retire.
    """

    digest: bytes
    tenant_id: str
    label: str | None = None
    plan: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: dict[str, Any]())
    not_after: float | None = None
    generation: int = 0

    def expired(self, now: float) -> bool:
        return self.not_after is not None and now >= self.not_after

    def to_json(self) -> str:
        """The record as JSON text: how a shared store keeps it. Raises TypeError for non-JSON metadata."""
        return json.dumps(
            {
                "digest": self.digest.hex(),
                "tenant_id": self.tenant_id,
                "label": self.label,
                "plan": self.plan,
                "metadata": dict(self.metadata),
                "not_after": self.not_after,
                "generation": self.generation,
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TenantRecord:
        fields = cast("dict[str, Any]", json.loads(text))
        return cls(
            digest=bytes.fromhex(fields["digest"]),
            tenant_id=fields["tenant_id"],
            label=fields["label"],
            plan=fields["plan"],
            metadata=fields["metadata"],
            not_after=fields["not_after"],
            generation=fields["generation"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantChange:
    """One write, as the change feed delivers it: `version` is the store's version after the write."""

    version: int
    kind: ChangeKind
    record: TenantRecord  # for "removed", the record as it was
    policy: SessionPolicy = "close"  # for "updated" and "removed": what the tenant's live sessions do
    drain_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class TenantSnapshot:
    """Every record, and the version of the last write they include."""

    version: int
    records: tuple[TenantRecord, ...]


class TenantStore(Protocol):
    """Where tenant records live. Async wherever the store may be remote; `digest` is local computation."""

    def digest(self, token: str) -> bytes:
        """The key a token is stored under; the token itself is never stored."""
        ...

    async def add(self, record: TenantRecord) -> TenantChange:
        """Store a new record. Raises `TenantConflict` if its digest or its tenant id is taken."""
        ...

    async def replace(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        """Replace the record stored under `record.digest` (None if there is none), keeping its tenant id
        (`TenantConflict` if `record` names another); the stored generation becomes the old one plus one."""
        ...

    async def remove(self, digest: bytes, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        """Remove the record stored under `digest`; None if there is none."""
        ...

    async def get(self, digest: bytes) -> TenantRecord | None: ...

    async def snapshot(self) -> TenantSnapshot: ...

    def changes(self) -> AbstractAsyncContextManager[AsyncIterator[TenantChange]]:
        """Subscribe to writes: once entered, every later write arrives, in version order. A subscriber that
        falls more than its buffer behind gets `SubscriptionCut` (after what it holds); it resynchronises."""
        ...


class InMemoryTenantStore:
    """The process-local `TenantStore`.

    Args:
        max_buffered: changes a subscriber may fall behind before it is cut.

    Records are kept as their JSON text, so what comes out is always a copy and nothing that could not
    travel to another process gets in.
    """

    def __init__(self, *, max_buffered: int = 1024) -> None:
        self._records: dict[bytes, str] = {}  # digest -> the record's JSON text
        self._ids: dict[str, bytes] = {}  # tenant id -> digest
        self._version = 0
        self._feed = Fanout[TenantChange](max_buffered)

    def digest(self, token: str) -> bytes:
        return token_digest(token)

    # -- the port ----------------------------------------------------------------------------------

    async def add(self, record: TenantRecord) -> TenantChange:
        return self.add_nowait(record)

    async def replace(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        return self.replace_nowait(record, policy=policy, drain_timeout=drain_timeout)

    async def remove(self, digest: bytes, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        return self.remove_nowait(digest, policy=policy, drain_timeout=drain_timeout)

    async def get(self, digest: bytes) -> TenantRecord | None:
        text = self._records.get(digest)
        return TenantRecord.from_json(text) if text is not None else None

    async def snapshot(self) -> TenantSnapshot:
        return TenantSnapshot(self._version, tuple(TenantRecord.from_json(text) for text in self._records.values()))

    @asynccontextmanager
    async def changes(self) -> AsyncGenerator[AsyncIterator[TenantChange], None]:
        async with self._feed.subscribe(None) as feed:
            yield feed

    # -- synchronous twins (nothing here waits) ---------------------------------------------------

    def add_nowait(self, record: TenantRecord) -> TenantChange:
        if record.digest in self._records:
            raise TenantConflict("token is already registered")
        if record.tenant_id in self._ids:
            raise TenantConflict(f"tenant id {record.tenant_id!r} is already in use")
        return self._write("added", record, "close", 0.0)

    def replace_nowait(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        text = self._records.get(record.digest)
        if text is None:
            return None
        stored = TenantRecord.from_json(text)
        if stored.tenant_id != record.tenant_id:
            raise TenantConflict("a replaced record keeps its tenant id")
        return self._write("updated", replace(record, generation=stored.generation + 1), policy, drain_timeout)

    def remove_nowait(self, digest: bytes, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        text = self._records.get(digest)
        if text is None:
            return None
        return self._write("removed", TenantRecord.from_json(text), policy, drain_timeout)

    def _write(
        self, kind: ChangeKind, record: TenantRecord, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange:
        text = record.to_json()  # first: a record that cannot be stored changes nothing
        if kind == "removed":
            del self._records[record.digest]
            del self._ids[record.tenant_id]
        else:
            self._records[record.digest] = text
            self._ids[record.tenant_id] = record.digest
        self._version += 1
        change = TenantChange(
            version=self._version,
            kind=kind,
            record=TenantRecord.from_json(text),
            policy=policy,
            drain_timeout=drain_timeout,
        )
        self._feed.deliver(None, change)
        return change

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"InMemoryTenantStore(version={self._version}, records={len(self._records)})"
