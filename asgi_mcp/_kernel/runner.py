"""Driving the SDK's server kernel (`ServerRunner`) without leaving cyclic garbage behind.

`ServerRunner.on_request` and `on_notify` are `cached_property`s: reading one stores a bound method
in the runner's own `__dict__`, a runner -> method -> runner cycle. The SDK's `serve_one` makes a
runner per modern request, so every request left about ten objects for the cycle collector; under
load that meant a young collection every few dozen requests, live requests promoted on each, and
full collections (tens of ms over the SDK's import-time heap) every couple of seconds: the p99.
Here the cached copies are dropped as soon as they are read (a session's runner), or the handler
behind the property is read without caching it (a modern request's), so a runner dies by
reference count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from mcp.server.connection import Connection
from mcp.server.context import HandlerResult
from mcp.server.runner import ServerRunner, aclose_shielded
from mcp.shared.dispatcher import DispatchContext, OnNotify, OnRequest
from mcp.shared.transport_context import TransportContext
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .hosting import ServerHost
from .results import plain_tool_result

__all__: list[str] = []


@dataclass
class KernelRunner(ServerRunner[Any]):
    """The SDK's `ServerRunner`, shaping results at less cost and to the same wire form.

    A plain tool result skips the dump-validate-dump round (`results.plain_tool_result`); the
    `serverInfo` stamp of a 2026-era answer is the host's copy (`ServerHost.server_info_stamp`)
    rather than a `copy.deepcopy` per answer. Everything else is `ServerRunner`'s.
    """

    host: ServerHost | None = None  # keyword-only (after the SDK's `KW_ONLY`); the server's host

    def _serialize(self, method: str, version: str, result: HandlerResult) -> dict[str, Any]:
        # With a cache hint for the method the SDK merges it into the result first: its path then.
        if method == "tools/call" and method not in self.server.cache_hints:
            shaped = plain_tool_result(result, version)
            if shaped is not None:
                return self._stamp_server_info(version, shaped)
        return super()._serialize(method, version, result)

    def _stamp_server_info(self, version: str, result: dict[str, Any]) -> dict[str, Any]:
        # `ServerRunner._stamp_server_info`, stamping a fresh copy of the host's stamp.
        if self.host is None or version not in MODERN_PROTOCOL_VERSIONS:
            return super()._stamp_server_info(version, result)
        raw_meta = result.get("_meta")
        if raw_meta is None:
            result["_meta"] = {SERVER_INFO_META_KEY: self.host.server_info_stamp()}
        elif isinstance(raw_meta, dict):
            meta = cast("dict[str, Any]", raw_meta)
            if meta.get(SERVER_INFO_META_KEY) is None:
                result["_meta"] = {**meta, SERVER_INFO_META_KEY: self.host.server_info_stamp()}
        return result


def kernel_handlers(runner: ServerRunner[Any]) -> tuple[OnRequest, OnNotify]:
    """The runner's request and notification handlers, with no copy left cached on the runner."""
    handlers = (runner.on_request, runner.on_notify)
    cache = vars(runner)
    cache.pop("on_request", None)
    cache.pop("on_notify", None)
    return handlers


def runner_request_handler(runner: ServerRunner[Any]) -> OnRequest:
    """What `runner.on_request` returns (`tests/kernel/test_runner.py` checks it still is), uncached."""
    return runner._on_request  # pyright: ignore[reportPrivateUsage]


def has_teardown(connection: Connection) -> bool:
    """Whether a handler registered per-connection cleanup on `connection.exit_stack`.

    Closing an empty stack does nothing, but `aclose_shielded` still costs a shielded scope with
    a deadline (about 9 µs, a spawn more for a session). The emptiness test reads a private deque
    of `AsyncExitStack`; if it is ever missing, every stack counts as non-empty.
    """
    callbacks = getattr(connection.exit_stack, "_exit_callbacks", None)
    return callbacks is None or len(callbacks) > 0


async def serve_one(
    host: ServerHost,
    dctx: DispatchContext[TransportContext],
    method: str,
    params: Mapping[str, Any] | None,
    connection: Connection,
) -> dict[str, Any]:
    """One request on a born-ready connection: `mcp.server.runner.serve_one`, garbage-free."""
    # Not `runner.on_request`: a `cached_property`, whose first read takes a lock (Python 3.11) and
    # leaves a copy to drop again; the method behind it is the same handler without either.
    on_request = runner_request_handler(KernelRunner(host.server, connection, host.state, host=host))
    try:
        return await on_request(dctx, method, params)
    finally:
        if has_teardown(connection):
            await aclose_shielded(connection)
