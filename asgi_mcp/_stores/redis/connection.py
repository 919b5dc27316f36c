"""One coredis client per store, its lifecycle, and the translation of Redis failures into 503s.

coredis clients are async context managers whose connection pool runs its connections as tasks in
a task group of the task that entered it (coredis 6). So a store is entered once, by a task that
outlives every request using it (McpApp's lifespan does that), and requests only issue commands.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator
from types import TracebackType
from typing import Final

import anyio
import coredis
import coredis.exceptions

from ..._core.errors import ConfigurationError, StoreUnavailable

__all__ = ["DEFAULT_TIMEOUT", "RedisConnection"]

logger = logging.getLogger("asgi_mcp.redis")

# A request that needs Redis gets its 503 within this many seconds (issue 13: "within 2 s").
DEFAULT_TIMEOUT: Final = 1.5


class RedisConnection:
    """A coredis client from a URL (`redis://`, `rediss://`, `unix://`; AUTH in the URL) or given as is.

    Args:
        target: a URL, or a `coredis.Redis` the caller configured (TLS context, credentials provider).
        timeout: seconds a command may take, connecting included, before it fails as unavailable.
        while_down: what the store's users get while Redis is out of reach, for the log.
    """

    def __init__(
        self, target: str | coredis.Redis[str], *, timeout: float = DEFAULT_TIMEOUT, while_down: str = "answers 503"
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError("the Redis timeout must be positive")
        if isinstance(target, str):
            self.client: coredis.Redis[str] = coredis.Redis.from_url(
                target, decode_responses=True, connect_timeout=timeout, stream_timeout=timeout
            )
        else:
            self.client = target
        self.timeout = timeout
        self.while_down = while_down
        self._entered = 0
        self._degraded = False

    async def __aenter__(self) -> RedisConnection:
        await self.client.__aenter__()
        self._entered += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered -= 1
        await self.client.__aexit__(exc_type, exc, tb)

    @property
    def entered(self) -> bool:
        return self._entered > 0

    @contextlib.contextmanager
    def guard(self, what: str) -> Generator[None]:
        """Bound a command by `timeout`; a failure to reach Redis becomes `StoreUnavailable` (503).

        Logged once per transition (available -> degraded -> available), never with a key or value.
        """
        if not self._entered:
            raise ConfigurationError(
                f"the {what} is not open: McpApp opens it in its lifespan; elsewhere use `async with store:`"
            )
        try:
            with anyio.fail_after(self.timeout):
                yield
        except (coredis.exceptions.ConnectionError, TimeoutError, OSError) as error:
            if not self._degraded:
                self._degraded = True
                logger.warning(
                    "Redis unreachable (%s): %s %s until it is back", type(error).__name__, what, self.while_down
                )
            raise StoreUnavailable(what) from None
        if self._degraded:
            self._degraded = False
            logger.warning("Redis reachable again: %s restored", what)


def require_prefix(store: str, prefix: str) -> None:
    """One rule for every store's key prefix: non-empty, and without braces, which would turn it
    into a cluster hash tag and pin all of a store's keys to one node."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(f"{store} prefix must be non-empty, without braces")
