"""The modern era's tool observers (`asgi_mcp._app.observers`): made once per tenant, kept up to a bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from asgi_mcp._app import observers
from asgi_mcp._app.observers import ModernObservers
from asgi_mcp._ops.lifecycle import EventHub, ToolCalled

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(hub: EventHub) -> AsyncIterator[TaskGroup]:
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        yield tg
        hub.close()


async def delivered(events: list[ToolCalled], count: int) -> list[str | None]:
    while len(events) < count:
        await checkpoint()
    tenants = [event.tenant_id for event in events]
    events.clear()
    return tenants


def call(made: ModernObservers, tenant_id: str | None) -> None:
    observe = made.anonymous if tenant_id is None else made.of_tenant(tenant_id)
    observe("tools/call", {"name": "echo"}, 0.0, {"result": {"isError": False}})


async def test_each_tenant_has_one_observer_kept_up_to_a_bound() -> None:
    hub = EventHub()
    events: list[ToolCalled] = []
    hub.on("tool_called", events.append)
    made = ModernObservers(hub, None)
    assert made.of_tenant("alpha") is made.of_tenant("alpha")
    assert made.of_tenant("alpha") is not made.of_tenant("bravo")
    with anyio.fail_after(10):
        async with running(hub):
            call(made, "alpha")
            call(made, None)
            assert await delivered(events, 2) == ["alpha", None]
            tenants = [f"t{index}" for index in range(observers._TENANTS_KEPT + 5)]
            for tenant_id in tenants:
                call(made, tenant_id)
                assert await delivered(events, 1) == [tenant_id]  # (the hub's queue is bounded)
            assert len(made._tenants) <= observers._TENANTS_KEPT
            call(made, "alpha")
            assert await delivered(events, 1) == ["alpha"]
