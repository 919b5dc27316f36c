"""A `Tenants` registry kept in step with a shared `TenantStore` (Redis): what every worker of a fleet runs.

The store announces each write with its version; the mirror applies them in version order through
`Tenants.apply`, so a token added, rotated or removed on any worker (or by `asgi-mcp tokens`) is in
force here as soon as the announcement arrives. A gap in the versions, a subscription cut for
falling behind, or a lost connection is followed by a full resynchronisation from a snapshot, taken
once subscribed again (so nothing written meanwhile is missed). The store's version is read every
second too: a store out of reach puts the registry on its local copy (`freshness`), and a version
that stays ahead of the copy's (an announcement lost) is a gap as well. Factories come from the registry's
own `plans`: code never travels.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

import anyio
import anyio.abc

from .._core.errors import StoreUnavailable, SubscriptionCut
from .._ports.tenant_store import Credential, TenantChange, TenantRecord, TenantStore
from .tenants import Tenants

__all__ = ["TenantMirror"]

logger = logging.getLogger("asgi_mcp.tenants")

BACKOFF: Final = (0.1, 0.25, 0.5, 1.0, 2.0)
# Seconds between the reads of the store's version that tell a store gone quiet from one out of reach.
PROBE_INTERVAL: Final = 1.0


class TenantMirror:
    """Runs while the app runs (`run`, until `stop`); the registry serves lookups locally meanwhile."""

    def __init__(self, tenants: Tenants, store: TenantStore, *, probe_interval: float = PROBE_INTERVAL) -> None:
        self._tenants = tenants
        self._store = store
        self._probe_interval = probe_interval
        self._scope = anyio.CancelScope()

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Started once the first synchronisation is done, or failed (it keeps trying with backoff)."""
        started, failures = False, 0
        copy = self._tenants.local_copy
        with self._scope:
            while True:
                try:
                    async with self._store.changes() as feed:
                        await self.resync()
                        failures = 0
                        if not started:
                            started = True
                            task_status.started()
                        await self._follow_and_probe(feed)
                    return  # the store closed: shutdown
                except SubscriptionCut:
                    logger.warning("tenant store changes missed; resynchronising")
                except (StoreUnavailable, OSError, TimeoutError) as error:
                    copy.lost()
                    logger.warning("tenant store feed lost (%s); resynchronising", type(error).__name__)
                except Exception:  # a bug here must not take the worker down: lookups go on locally
                    copy.lost()
                    logger.exception("tenant store mirror failed; resynchronising")
                if not started:
                    started = True
                    task_status.started()
                await anyio.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1

    async def _follow_and_probe(self, feed: AsyncIterator[TenantChange]) -> None:
        """Apply the feed's changes; meanwhile read the store's version every `probe_interval`: a feed
        does not notice a store gone quiet (its client reconnects by itself, losing what was published
        meanwhile). Raises `StoreUnavailable` when the store stops answering, `SubscriptionCut` when
        its version stays ahead of the copy's (an announcement was lost): the caller resynchronises."""
        failure: Exception | None = None
        async with anyio.create_task_group() as probing:

            async def probe() -> None:
                nonlocal failure
                seen = 0  # the store's version at the previous probe: the copy has it by now
                while True:
                    await anyio.sleep(self._probe_interval)
                    try:
                        version = await self._store.version()
                    except (StoreUnavailable, OSError, TimeoutError) as error:
                        failure = error
                        break
                    if self._tenants.version < seen or self._tenants.version > version:  # lost, or store reset
                        failure = SubscriptionCut("tenant store")
                        break
                    seen = version
                probing.cancel_scope.cancel()

            probing.start_soon(probe)
            try:
                async for change in feed:
                    await self._follow(change)
            except Exception as error:  # raised below, as itself rather than in the task group's group
                failure = error
            probing.cancel_scope.cancel()
        if failure is not None:
            raise failure

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
        tenants.local_copy.resynced()


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
