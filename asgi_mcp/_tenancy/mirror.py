"""A `Tenants` registry kept in step with a shared `TenantStore` (Redis): what every worker of a fleet runs.

The store announces each write with its version; the mirror applies them in version order through
`Tenants.apply`, so a token added, rotated or removed on any worker (or by `asgi-mcp tokens`) is in
force here as soon as the announcement arrives. A gap in the versions, a subscription cut for
falling behind, or a lost connection is followed by a full resynchronisation from a snapshot, taken
once subscribed again (so nothing written meanwhile is missed). Factories come from the registry's
own `plans`: code never travels.
"""

from __future__ import annotations

import logging
from typing import Final

import anyio
import anyio.abc

from .._core.errors import StoreUnavailable, SubscriptionCut
from .._ports.tenant_store import Credential, TenantChange, TenantRecord, TenantStore
from .tenants import Tenants

__all__ = ["TenantMirror"]

logger = logging.getLogger("asgi_mcp.tenants")

BACKOFF: Final = (0.1, 0.25, 0.5, 1.0, 2.0)


class TenantMirror:
    """Runs while the app runs (`run`, until `stop`); the registry serves lookups locally meanwhile."""

    def __init__(self, tenants: Tenants, store: TenantStore) -> None:
        self._tenants = tenants
        self._store = store
        self._scope = anyio.CancelScope()

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Started once the first synchronisation is done, or failed (it keeps trying with backoff)."""
        started, failures = False, 0
        with self._scope:
            while True:
                try:
                    async with self._store.changes() as feed:
                        await self.resync()
                        failures = 0
                        if not started:
                            started = True
                            task_status.started()
                        async for change in feed:
                            await self._follow(change)
                    return  # the store closed: shutdown
                except (SubscriptionCut, StoreUnavailable, OSError, TimeoutError) as error:
                    logger.warning("tenant store feed lost (%s); resynchronising", type(error).__name__)
                except Exception:  # a bug here must not take the worker down: lookups go on locally
                    logger.exception("tenant store mirror failed; resynchronising")
                if not started:
                    started = True
                    task_status.started()
                await anyio.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1

    async def _follow(self, change: TenantChange) -> None:
        if change.version <= self._tenants.version:
            return  # in the snapshot already
        if change.version != self._tenants.version + 1:
            await self.resync()  # a write was missed
            return
        try:
            self._tenants.apply(change)
        except KeyError:
            await self.resync()  # about a tenant this copy never saw (one without tokens)

    async def resync(self) -> None:
        """Bring the registry to the store's snapshot: tenants and tokens added, updated, removed."""
        snapshot = await self._store.snapshot()
        version, tenants = snapshot.version, self._tenants
        records = {record.tenant_id: record for record in snapshot.records}
        tokens: dict[str, list[Credential]] = {}
        for credential in sorted(snapshot.credentials, key=lambda c: c.digest):
            tokens.setdefault(credential.tenant_id, []).append(credential)
        held = tenants.held()
        for tenant_id in tenants.ids():
            if tenant_id not in records:
                tenant = tenants.by_id(tenant_id)
                record = tenant.record if tenant is not None and tenant.record else TenantRecord(tenant_id=tenant_id)
                gone = tuple(Credential(digest=d, tenant_id=t) for d, t in held.items() if t == tenant_id)
                tenants.apply(TenantChange(version=version, kind="removed", record=record, credentials=gone))
        for tenant_id, record in records.items():
            _sync_tenant(tenants, version, record, tokens.get(tenant_id, []))
        stored = {credential.digest for credential in snapshot.credentials}
        for digest, tenant_id in tenants.held().items():
            if digest not in stored and tenant_id in records:
                ended = (Credential(digest=digest, tenant_id=tenant_id),)
                tenants.apply(
                    TenantChange(
                        version=version, kind="credential_removed", record=records[tenant_id], credentials=ended
                    )
                )
        tenants.apply_version(version)


def _sync_tenant(tenants: Tenants, version: int, record: TenantRecord, credentials: list[Credential]) -> None:
    known = tenants.by_id(record.tenant_id)
    if known is None:
        if not credentials:
            return  # no token reaches it
        tenants.apply(TenantChange(version=version, kind="added", record=record, credentials=(credentials[0],)))
        credentials = credentials[1:]
    elif known.record is None or known.record.generation != record.generation:
        tenants.apply(TenantChange(version=version, kind="updated", record=record))
    for credential in credentials:  # sets each token again: a changed expiry is taken too
        tenants.apply(TenantChange(version=version, kind="credential_set", record=record, credentials=(credential,)))
