"""What every port contract suite shares: how an implementation's test class plugs in.

An implementation's test class subclasses a contract (`TenantStoreContract`, ...) and overrides the
`store_factory` fixture: each call opens a handle on the test's one store, as another worker would
(in memory: the same object; on Redis: a new client on the same server, keys cleared per test). The
store is built with `MAX_BUFFERED` as its per-subscriber buffer, so the suite can overrun it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import anyio

from asgi_mcp import SubscriptionCut

T = TypeVar("T")

StoreFactory = Callable[[], AbstractAsyncContextManager[T]]

MAX_BUFFERED = 8
TIMEOUT = 5.0  # every wait in a contract test is bounded by this: a remote store may be slow, never stuck


async def next_of(items: AsyncIterator[T]) -> T:
    """The subscription's next item, within `TIMEOUT`."""
    with anyio.fail_after(TIMEOUT):
        return await anext(items)


async def read_until_cut(items: AsyncIterator[T], limit: int) -> list[T]:
    """What a subscription still yields before it raises `SubscriptionCut`; fails if it yields `limit` items."""
    got: list[T] = []
    try:
        while len(got) < limit:
            got.append(await next_of(items))
    except SubscriptionCut:
        return got
    raise AssertionError(f"not cut after {limit} items")
