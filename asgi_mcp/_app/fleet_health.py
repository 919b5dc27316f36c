"""The fleet's health: each worker beats in the fleet's roster, and any worker reports on all of them.

`Heartbeat` runs in the runtime's task group while a worker with a roster (`FleetStores.roster`)
runs: it writes the worker's record (id, start, sessions per tenant) every `FleetStores.heartbeat`
seconds with a time to live of three beats, and removes it when the worker stops gracefully.
`fleet_stats` is what `McpApp.fleet_stats()` answers; `fleet_report` the lines `asgi-mcp fleet` prints.
Tenants appear by id; nothing here holds a token or a digest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import anyio
import anyio.abc

from .._core.errors import StoreUnavailable
from .._ports.fleet import FleetStores
from .._ports.fleet_roster import FleetRoster, WorkerRecord
from .._tenancy.tenants import Tenants

__all__ = ["Heartbeat", "fleet_report", "fleet_stats", "heartbeat_for", "new_worker_id"]

logger = logging.getLogger("asgi_mcp.fleet")

# A graceful stop's removal from the roster may take this long (Redis down: the worker ages out instead).
LEAVE_TIMEOUT: Final = 2.0

SessionCounts = Callable[[], Mapping[str | None, int]]


def new_worker_id() -> str:
    """Host, process id and a random part: readable for an operator, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def heartbeat_for(fleet: FleetStores | None, started_at: float, counts: SessionCounts) -> Heartbeat | None:
    """The worker's heartbeat in its fleet's roster; None without one."""
    if fleet is None or fleet.roster is None:
        return None
    ttl = fleet.liveness_ttl
    return Heartbeat(fleet.roster, interval=fleet.heartbeat, ttl=ttl, started_at=started_at, counts=counts)


class Heartbeat:
    """One worker's beats in the roster, from the start of its run (`run`) to its graceful stop (`stop`)."""

    def __init__(
        self,
        roster: FleetRoster,
        *,
        interval: float,
        ttl: float,
        started_at: float,
        counts: SessionCounts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.roster = roster
        self.worker_id = new_worker_id()
        self.interval = interval
        self.ttl = ttl
        self.started_at = started_at
        self._counts = counts
        self._clock = clock
        self._scope = anyio.CancelScope()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True  # a report during shutdown must not write the record back after it left
        self._scope.cancel()

    def record(self) -> WorkerRecord:
        """This worker as its next beat tells it."""
        counts = self._counts()
        return WorkerRecord(
            worker_id=self.worker_id,
            started_at=self.started_at,
            beat_at=self._clock(),
            sessions=sum(counts.values()),
            sessions_per_tenant={tenant: n for tenant, n in counts.items() if tenant is not None and n > 0},
        )

    async def beat(self) -> None:
        await self.roster.beat(self.record(), ttl=self.ttl)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Started once the first beat is written (or failed: the next one may succeed)."""
        with self._scope:
            await self._beat_safely()
            task_status.started()
            while True:
                await anyio.sleep(self.interval)
                await self._beat_safely()
        # Only a graceful stop gets here (`stop`); a cancelled run leaves its record to age out.
        with anyio.CancelScope(shield=True), anyio.move_on_after(LEAVE_TIMEOUT), contextlib.suppress(StoreUnavailable):
            await self.roster.leave(self.worker_id)

    async def _beat_safely(self) -> None:
        try:
            await self.beat()
        except StoreUnavailable:
            pass  # the store's connection logs it, once per transition
        except Exception:  # a bug here must not take the worker down: it only stops being listed
            logger.exception("fleet heartbeat failed")


class _Running(Protocol):
    heartbeat: Heartbeat | None


async def fleet_stats(this_worker: dict[str, Any], run: _Running | None, tenants: Tenants | None) -> dict[str, Any]:
    """This worker's stats and the fleet's: workers alive, tokens registered, sessions per tenant.

    The worker's own record is written first, so what it reports of itself is current; the others'
    are as of their last beat (at most `heartbeat` seconds old). Raises `StoreUnavailable` when a
    shared store does not answer."""
    heartbeat = run.heartbeat if run is not None else None
    if heartbeat is None:  # no roster, or not running: a fleet of this worker alone
        sessions, per_tenant = this_worker["active_sessions"], this_worker["sessions_per_tenant"]
        records, worker_id = [], None
    else:
        if not heartbeat.stopped:
            await heartbeat.beat()
        records, worker_id = await heartbeat.roster.alive(), heartbeat.worker_id
        sessions, per_tenant = sum(record.sessions for record in records), _per_tenant(records)
    now = time.time()
    return {
        "worker_id": worker_id,
        "workers_alive": len(records),
        "workers": [
            {
                "worker_id": record.worker_id,
                "age": max(0.0, now - record.started_at),
                "last_beat": max(0.0, now - record.beat_at),
                "sessions": record.sessions,
            }
            for record in records
        ],
        "registered_tokens": await registered_tokens(tenants),
        "sessions": sessions,
        "sessions_per_tenant": per_tenant,
        "this_worker": this_worker,
    }


async def registered_tokens(tenants: Tenants | None) -> int:
    """The tokens that work now: in the shared store when there is one (the fleet's registry), else here."""
    if tenants is None:
        return 0
    store = tenants.shared_store
    if store is None:
        return len(tenants.held())
    now = tenants.clock()
    return sum(1 for credential in (await store.snapshot()).credentials if not credential.expired(now))


def fleet_report(records: list[WorkerRecord], tokens: int | None, now: float) -> list[str]:
    """What `asgi-mcp fleet` prints: each worker alive, then the sessions of each tenant (by its id)."""
    lines = [f"workers alive: {len(records)}"]
    for record in records:
        age, beat = max(0.0, now - record.started_at), max(0.0, now - record.beat_at)
        lines.append(f"  {record.worker_id}\tup {age:.0f}s\tlast beat {beat:.1f}s ago\tsessions={record.sessions}")
    per_tenant = _per_tenant(records)
    if tokens is not None:
        lines.append(f"tokens registered: {tokens}")
    lines.append(f"sessions per tenant: {len(per_tenant)} tenant(s)")
    lines += [f"  {tenant_id}\t{count}" for tenant_id, count in per_tenant.items()]
    return lines


def _per_tenant(records: list[WorkerRecord]) -> dict[str, int]:
    """Sessions per tenant id across the workers, by tenant id."""
    total: dict[str, int] = {}
    for record in records:
        for tenant_id, count in record.sessions_per_tenant.items():
            total[tenant_id] = total.get(tenant_id, 0) + count
    return dict(sorted(total.items()))
