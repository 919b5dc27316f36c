"""The fleet roster port: which workers are alive, and what each holds.

Each worker of a fleet beats: it writes its `WorkerRecord` (its id, its start, its sessions per
tenant) with a time to live, again and again well inside it. A worker that shuts down gracefully
`leave`s; a killed one stops beating and ages out when its time to live passes. `alive()` is every
record still within its time. Records hold counts keyed by tenant id, never a token or a digest.
`InMemoryFleetRoster` is the process-local implementation (a fleet of the workers sharing one object);
the Redis one lives in `_stores.redis`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

__all__ = ["FleetRoster", "InMemoryFleetRoster", "WorkerRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    """One worker, as its last beat told.

    Args:
        worker_id: the worker's name in the fleet (host, process id and a random part).
        started_at: wall-clock time (seconds since the epoch) the worker started.
        beat_at: wall-clock time of this beat.
        sessions: the worker's live (legacy-era) sessions, all of them.
        sessions_per_tenant: those of them opened by a tenant's token, counted by tenant id.
    """

    worker_id: str
    started_at: float
    beat_at: float
    sessions: int = 0
    sessions_per_tenant: Mapping[str, int] = field(default_factory=lambda: dict[str, int]())

    def to_json(self) -> str:
        fields = {
            "worker_id": self.worker_id,
            "started_at": self.started_at,
            "beat_at": self.beat_at,
            "sessions": self.sessions,
            "sessions_per_tenant": dict(self.sessions_per_tenant),
        }
        return json.dumps(fields, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerRecord:
        fields = cast("dict[str, Any]", json.loads(text))
        counts = cast("dict[str, int]", fields["sessions_per_tenant"])
        return cls(
            worker_id=str(fields["worker_id"]),
            started_at=float(fields["started_at"]),
            beat_at=float(fields["beat_at"]),
            sessions=int(fields["sessions"]),
            sessions_per_tenant={str(tenant): int(count) for tenant, count in counts.items()},
        )


class FleetRoster(Protocol):
    """Where the workers of a fleet announce themselves (shared: every worker reads every record)."""

    async def beat(self, record: WorkerRecord, *, ttl: float) -> None:
        """Write (or overwrite) the worker's record; it counts as alive for `ttl` seconds from now."""
        ...

    async def leave(self, worker_id: str) -> bool:
        """Remove the worker's record at once; False if it held none (already gone, or aged out)."""
        ...

    async def alive(self) -> list[WorkerRecord]:
        """Every worker whose time to live has not passed, by worker id."""
        ...


class InMemoryFleetRoster:
    """A roster in this process. `clock` (monotonic seconds) decides ages; a test passes its own."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: dict[str, tuple[WorkerRecord, float]] = {}  # worker id -> (record, alive until)

    async def beat(self, record: WorkerRecord, *, ttl: float) -> None:
        if not ttl > 0 or math.isinf(ttl):
            raise ValueError("ttl must be a positive number of seconds")
        self._records[record.worker_id] = (record, self._clock() + ttl)

    async def leave(self, worker_id: str) -> bool:
        held = self._records.pop(worker_id, None)
        return held is not None and held[1] > self._clock()

    async def alive(self) -> list[WorkerRecord]:
        now = self._clock()
        for worker_id in [w for w, (_, until) in self._records.items() if until <= now]:
            del self._records[worker_id]  # aged out
        return [record for _, (record, _) in sorted(self._records.items())]
