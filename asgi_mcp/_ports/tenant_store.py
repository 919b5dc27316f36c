"""The tenant store port: what the token registry keeps, where every worker could read it.

A store holds data only: a `TenantRecord` per tenant (tenant id, label, plan name, metadata,
generation), a `Credential` per token (its digest, its tenant, its expiry: a tenant holds several
during a rotation), a store-wide version that every write bumps by one, and a feed of the changes.
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
    "Credential",
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

ChangeKind = Literal["added", "updated", "removed", "credential_set", "credential_removed"]


def token_digest(token: str) -> bytes:
    """SHA-256 of the token: what an in-process registry keys tokens by (a shared store keys them by HMAC)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantRecord:
    """One tenant, as data: nothing in it is code, nothing in it is a token.

    Args:
        tenant_id: the non-secret name stats, events and logs show; the store's key.
        label: the operator's label, when the tenant id is one (else the id is derived from a digest).
        plan: the plan name each worker resolves (server factory, limits); None: a factory given in code.
        metadata: the operator's JSON object about the tenant (read-only by convention).
        generation: bumped by the store on every `replace`: servers built for an older one retire.
    """

    tenant_id: str
    label: str | None = None
    plan: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: dict[str, Any]())
    generation: int = 0

    def to_json(self) -> str:
        """The record as JSON text: how a shared store keeps it. Raises TypeError for non-JSON metadata."""
        fields = {
            "tenant_id": self.tenant_id,
            "label": self.label,
            "plan": self.plan,
            "metadata": dict(self.metadata),
            "generation": self.generation,
        }
        return json.dumps(fields, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> TenantRecord:
        return cls(**cast("dict[str, Any]", json.loads(text)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """One token of a tenant: its digest (`TenantStore.digest`, the store's key), never the token.

    `not_after` is the wall-clock time (seconds since the epoch) from which it is refused; None: never.
    """

    digest: bytes
    tenant_id: str
    not_after: float | None = None

    def expired(self, now: float) -> bool:
        return self.not_after is not None and now >= self.not_after

    def to_json(self) -> str:
        fields = {"digest": self.digest.hex(), "tenant_id": self.tenant_id, "not_after": self.not_after}
        return json.dumps(fields, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Credential:
        fields = cast("dict[str, Any]", json.loads(text))
        return cls(digest=bytes.fromhex(fields["digest"]), tenant_id=fields["tenant_id"], not_after=fields["not_after"])


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantChange:
    """One write, as the change feed delivers it: `version` is the store's version after the write.

    `record` is the tenant concerned (as it was, for "removed"); `credentials` the tokens the write
    concerns: the first for "added", every one it had for "removed", the one set or removed otherwise.
    """

    version: int
    kind: ChangeKind
    record: TenantRecord
    credentials: tuple[Credential, ...] = ()
    policy: SessionPolicy = "close"  # for "updated" and "removed": what the tenant's live sessions do
    drain_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class TenantSnapshot:
    """Every tenant and every credential, and the version of the last write they include."""

    version: int
    records: tuple[TenantRecord, ...]
    credentials: tuple[Credential, ...]


class TenantStore(Protocol):
    """Where tenant records live. Async wherever the store may be remote; `digest` is local computation."""

    def digest(self, token: str) -> bytes:
        """The key a token is stored under; the token itself is never stored."""
        ...

    async def add(self, record: TenantRecord, credential: Credential) -> TenantChange:
        """Store a new tenant with its first token. Raises `TenantConflict` if the tenant id or the digest
        is taken (or the credential names another tenant)."""
        ...

    async def replace(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        """Replace the record of `record.tenant_id` (None if there is none); the stored generation becomes
        the old one plus one, whatever `record` says."""
        ...

    async def remove(self, tenant_id: str, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        """Remove the tenant and every token it holds; None if there is no such tenant."""
        ...

    async def set_credential(self, credential: Credential) -> TenantChange | None:
        """Give an existing tenant a token, or change the expiry of one it holds; None if the tenant is
        unknown. Raises `TenantConflict` if the digest belongs to another tenant."""
        ...

    async def remove_credential(self, digest: bytes) -> TenantChange | None:
        """Take one token away (its tenant stays, even with none left); None if it is not stored."""
        ...

    async def get(self, tenant_id: str) -> TenantRecord | None: ...

    async def credential(self, digest: bytes) -> Credential | None: ...

    async def snapshot(self) -> TenantSnapshot: ...

    async def version(self) -> int:
        """The store's version (that of its last write): one cheap read, which a mirror makes now and
        then to learn the store still answers and that no announced write passed it by."""
        ...

    def changes(self) -> AbstractAsyncContextManager[AsyncIterator[TenantChange]]:
        """Subscribe to writes: once entered, every later write arrives, in version order. A subscriber that
        falls more than its buffer behind gets `SubscriptionCut` (after what it holds); it resynchronises."""
        ...


class InMemoryTenantStore:
    """The process-local `TenantStore`.

    Args:
        max_buffered: changes a subscriber may fall behind before it is cut.

    Records are kept as their JSON text, so what comes out is always a copy and nothing that could not
    travel to another process gets in. The `*_nowait` twins do the same writes without awaiting.
    """

    def __init__(self, *, max_buffered: int = 1024) -> None:
        self._records: dict[str, str] = {}  # tenant id -> the record's JSON text
        self._credentials: dict[bytes, str] = {}  # digest -> the credential's JSON text
        self._tokens: dict[str, set[bytes]] = {}  # tenant id -> its digests
        self._version = 0
        self._feed = Fanout[TenantChange](max_buffered)

    def digest(self, token: str) -> bytes:
        return token_digest(token)

    # -- the port ----------------------------------------------------------------------------------

    async def add(self, record: TenantRecord, credential: Credential) -> TenantChange:
        return self.add_nowait(record, credential)

    async def replace(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        return self.replace_nowait(record, policy=policy, drain_timeout=drain_timeout)

    async def remove(self, tenant_id: str, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        return self.remove_nowait(tenant_id, policy=policy, drain_timeout=drain_timeout)

    async def set_credential(self, credential: Credential) -> TenantChange | None:
        return self.set_credential_nowait(credential)

    async def remove_credential(self, digest: bytes) -> TenantChange | None:
        return self.remove_credential_nowait(digest)

    async def get(self, tenant_id: str) -> TenantRecord | None:
        text = self._records.get(tenant_id)
        return TenantRecord.from_json(text) if text is not None else None

    async def credential(self, digest: bytes) -> Credential | None:
        text = self._credentials.get(digest)
        return Credential.from_json(text) if text is not None else None

    async def version(self) -> int:
        return self._version

    async def snapshot(self) -> TenantSnapshot:
        return TenantSnapshot(
            self._version,
            tuple(TenantRecord.from_json(text) for text in self._records.values()),
            tuple(Credential.from_json(text) for text in self._credentials.values()),
        )

    @asynccontextmanager
    async def changes(self) -> AsyncGenerator[AsyncIterator[TenantChange], None]:
        async with self._feed.subscribe(None) as feed:
            yield feed

    # -- synchronous twins (nothing here waits) ---------------------------------------------------

    def add_nowait(self, record: TenantRecord, credential: Credential) -> TenantChange:
        if record.tenant_id in self._records:
            raise TenantConflict(f"tenant id {record.tenant_id!r} is already in use")
        if credential.digest in self._credentials:
            raise TenantConflict("token is already registered")
        if credential.tenant_id != record.tenant_id:
            raise TenantConflict("the credential names another tenant")
        text, token = record.to_json(), credential.to_json()  # first: what cannot be stored changes nothing
        self._records[record.tenant_id] = text
        self._credentials[credential.digest] = token
        self._tokens[record.tenant_id] = {credential.digest}
        return self._announce("added", text, (token,))

    def replace_nowait(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        stored = self._records.get(record.tenant_id)
        if stored is None:
            return None
        generation = TenantRecord.from_json(stored).generation + 1
        text = replace(record, generation=generation).to_json()
        self._records[record.tenant_id] = text
        return self._announce("updated", text, (), policy, drain_timeout)

    def remove_nowait(self, tenant_id: str, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        text = self._records.pop(tenant_id, None)
        if text is None:
            return None
        tokens = tuple(self._credentials.pop(digest) for digest in sorted(self._tokens.pop(tenant_id)))
        return self._announce("removed", text, tokens, policy, drain_timeout)

    def set_credential_nowait(self, credential: Credential) -> TenantChange | None:
        text = self._records.get(credential.tenant_id)
        if text is None:
            return None
        held = self._credentials.get(credential.digest)
        if held is not None and Credential.from_json(held).tenant_id != credential.tenant_id:
            raise TenantConflict("token is already registered to another tenant")
        token = credential.to_json()
        self._credentials[credential.digest] = token
        self._tokens[credential.tenant_id].add(credential.digest)
        return self._announce("credential_set", text, (token,))

    def remove_credential_nowait(self, digest: bytes) -> TenantChange | None:
        token = self._credentials.pop(digest, None)
        if token is None:
            return None
        tenant_id = Credential.from_json(token).tenant_id
        self._tokens[tenant_id].discard(digest)
        return self._announce("credential_removed", self._records[tenant_id], (token,))

    def _announce(
        self,
        kind: ChangeKind,
        record: str,
        credentials: tuple[str, ...],
        policy: SessionPolicy = "close",
        drain_timeout: float = 0.0,
    ) -> TenantChange:
        """Count the write and tell the subscribers, with copies of what was written."""
        self._version += 1
        change = TenantChange(
            version=self._version,
            kind=kind,
            record=TenantRecord.from_json(record),
            credentials=tuple(Credential.from_json(text) for text in credentials),
            policy=policy,
            drain_timeout=drain_timeout,
        )
        self._feed.deliver(None, change)
        return change

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"InMemoryTenantStore(version={self._version}, tenants={len(self._records)})"
