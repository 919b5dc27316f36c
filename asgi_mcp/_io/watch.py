"""Watchers for the exchanges that last: one ticker per app instead of a watcher task per request.

A modern (2026-07-28) exchange runs its handler in the task of the request that carries it. Nearly
every one ends within milliseconds, and for those a watcher task (spawned, blocked in `receive()`,
then cancelled) would cost more than the exchange itself, and would keep the exchange's objects
alive across a turn of the loop, which is what drives the cycle collector under load. So nothing
watches at first: every `period` the ticker gives a watcher to each exchange that has been running
for at least one whole period. A client that leaves a long exchange is noticed within two periods.
"""

from __future__ import annotations

from typing import Protocol

import anyio
import anyio.abc

__all__: list[str] = []


class Watchable(Protocol):
    watch_ticks: int  # periods seen while unwatched; -1 once watched

    async def watch(self) -> None:
        """Run as the exchange's watcher task until it settles (or its client leaves)."""


class LateWatch:
    """The app's exchanges running inline, and the ticker that hands watchers to the lasting ones."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._running: set[Watchable] = set()
        self._wanted: anyio.Event | None = None  # set when the first exchange arrives
        self._scope: anyio.CancelScope | None = None

    def add(self, exchange: Watchable) -> None:
        self._running.add(exchange)
        if self._wanted is not None:
            self._wanted.set()
            self._wanted = None

    def discard(self, exchange: Watchable) -> None:
        self._running.discard(exchange)

    async def run(self) -> None:
        """The ticker; the watchers are its children, so `stop` ends them all with it."""
        async with anyio.create_task_group() as watchers:
            self._scope = watchers.cancel_scope
            while True:
                if not self._running:
                    # Idle: no wake-ups until there is something to watch.
                    wanted = self._wanted = anyio.Event()
                    await wanted.wait()
                await anyio.sleep(self.period)
                self.tick(watchers)

    def tick(self, task_group: anyio.abc.TaskGroup) -> None:
        for exchange in self._running:
            if exchange.watch_ticks < 0:
                continue
            exchange.watch_ticks += 1
            if exchange.watch_ticks >= 2:  # seen at two ticks: running for a whole period
                exchange.watch_ticks = -1
                task_group.start_soon(exchange.watch)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
