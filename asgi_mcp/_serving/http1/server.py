"""Listening, accepting within the connection limit, and stopping gracefully.

`serve(app, config, shutdown_trigger=..., task_status=...)` runs in the caller's event loop (asyncio
or Trio). It starts the app's lifespan, binds, reports the bound address through `task_status`, and
serves until `shutdown_trigger` returns (graceful) or it is cancelled (immediate). Graceful stopping:
accepting ends and idle keep-alive connections close at once; requests in flight get
`graceful_timeout` to finish while the lifespan shutdown runs alongside (so the app can end its
long-lived SSE streams); what is left then is cancelled; the lifespan's own answer is awaited for
at most `graceful_timeout` more. No signal handler is ever installed.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from ..._core.errors import ConfigurationError
from .asyncio_stream import asyncio_stream_opener
from .config import ServerConfig
from .connection import SERVER_LOGGER, HttpConnection
from .lifespan import Lifespan
from .parsers import make_parser
from .socket_stream import DirectSocketStream
from .state import ServerState

if TYPE_CHECKING:
    import trio

__all__ = ["BoundAddress", "listen", "serve"]

_logger = logging.getLogger(SERVER_LOGGER)


@dataclass(frozen=True)
class BoundAddress:
    """Where the server listens: (host, port) for TCP, or `uds` for a Unix socket."""

    host: str
    port: int
    uds: str | None = None
    tls: bool = False

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        if self.uds is not None:
            return f"{scheme}+unix://{self.uds}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


async def serve(
    app: Any,
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    listeners: list[anyio.abc.SocketListener] | None = None,
    task_status: anyio.abc.TaskStatus[BoundAddress] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger()` returns (then stop gracefully) or until cancelled.

    `listeners` (from `listen(config)`) are used, and closed, instead of binding here: binding
    before a task group is entered lets a taken port fail as a plain `OSError`.
    """
    state = ServerState(app, config, make_parser(config.parser, config.max_headers))
    lifespan = Lifespan(app, config.lifespan)
    failure: str | None = None
    # Bound first, so that a taken port fails at once with a plain OSError; connections made before
    # the lifespan has started wait in the backlog.
    if listeners is None:
        listeners = await listen(config)
    try:
        async with anyio.create_task_group() as lifespan_group:
            failure = await lifespan.startup(lifespan_group)
            if failure is None:
                state.lifespan_state = lifespan.state
                await _serve_connections(state, lifespan, listeners, shutdown_trigger, task_status)
                with anyio.move_on_after(config.graceful_timeout):
                    await lifespan.shutdown()
            lifespan.close()
            lifespan_group.cancel_scope.deadline = anyio.current_time() + config.graceful_timeout
    finally:
        for listener in listeners:
            await anyio.aclose_forcefully(listener)
    if failure is not None:
        # Raised here, outside the task group, so the caller's `start` sees this error itself.
        raise ConfigurationError(failure)


# The connections' task group: anyio's, or on Trio, Trio's own nursery (see `_connection_group`).
_TaskGroup = Union[anyio.abc.TaskGroup, "trio.Nursery"]


def _connection_group(on_trio: bool) -> AbstractAsyncContextManager[_TaskGroup]:
    """The connections' task group; on Trio, Trio's own nursery. anyio's `start_soon` wraps each task
    in a handle (a cancel scope, an event, and a coroutine around the task's): on Trio about 30 µs of
    the server's 170 µs of CPU for a connection that carries one request."""
    if on_trio:
        import trio  # (optional: imported only on Trio)

        return trio.open_nursery()
    return anyio.create_task_group()


async def _serve_connections(
    state: ServerState,
    lifespan: Lifespan,
    listeners: list[anyio.abc.SocketListener],
    shutdown_trigger: Callable[[], Awaitable[object]] | None,
    task_status: anyio.abc.TaskStatus[BoundAddress],
) -> None:
    async with _connection_group(state.on_trio) as connections:
        connections.start_soon(_watch_timeouts, state)  # ends with the connections (see `_stop`)
        async with anyio.create_task_group() as accepting:
            for listener in listeners:
                accepting.start_soon(_accept_loop, listener, state, connections)
            task_status.started(_bound_address(listeners[0], state.config))
            if shutdown_trigger is None:
                await anyio.sleep_forever()
            else:
                await shutdown_trigger()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await anyio.aclose_forcefully(listener)  # new connections are refused from here
        await _stop(state, lifespan, connections)


async def _stop(state: ServerState, lifespan: Lifespan, connections: _TaskGroup) -> None:
    state.stopping = True
    for connection in list(state.connections):
        connection.stop_if_idle()
    with anyio.move_on_after(state.config.graceful_timeout):
        async with anyio.create_task_group() as draining:
            # The app's lifespan shutdown ends its long-lived streams while requests drain.
            draining.start_soon(lifespan.shutdown)
            if state.connections:
                await state.all_closed.wait()
    connections.cancel_scope.cancel()


async def _watch_timeouts(state: ServerState) -> None:
    """The clock of the connections' timeouts (see `state.py`): one wake-up per tick for the whole server."""
    while True:
        await anyio.sleep(state.tick_seconds)
        state.advance()


async def listen(config: ServerConfig) -> list[anyio.abc.SocketListener]:
    """The listening sockets `config` asks for (`serve` binds them itself unless given them)."""
    if config.uds is not None:
        _remove_stale_socket(config.uds)
        return [await anyio.create_unix_listener(config.uds, backlog=config.backlog)]
    multi = await anyio.create_tcp_listener(local_host=config.host, local_port=config.port, backlog=config.backlog)
    return [listener for listener in multi.listeners if isinstance(listener, anyio.abc.SocketListener)]


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a previous run is removed (anything else at the path is left alone)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _bound_address(listener: anyio.abc.SocketListener, config: ServerConfig) -> BoundAddress:
    tls = config.ssl_context is not None
    if config.uds is not None:
        return BoundAddress("", 0, uds=config.uds, tls=tls)
    address = listener.extra(SocketAttribute.local_address)
    assert isinstance(address, tuple)
    return BoundAddress(str(address[0]), int(address[1]), tls=tls)


async def _accept_loop(listener: anyio.abc.SocketListener, state: ServerState, connections: _TaskGroup) -> None:
    """Accept each connection as it comes, wrapped in its own task that holds one of the slots.

    The loop takes a slot before it accepts, so over `max_connections` connections wait in the listen
    backlog. It yields to wait (for a slot, or for the socket while the backlog is empty) and once
    every `_ACCEPT_BURST` connections. Under load, each yield on the way back to the socket costs new
    connections a turn of the event loop in the backlog (a round of every connection's work): with a
    checkpoint before each wait (the semaphore's), a client opening a connection per request saw a
    p99 four times its median. It never waits while the backlog holds more: one accept per turn of
    the loop made a burst of 32 new connections take ~180 ms to get in while the earlier ones were
    served. But it lets each `_ACCEPT_BURST` tasks start before it makes more: a task not started
    yet holds its objects (anyio's task handle, scope, events: ~25 the collector tracks), and a
    burst of 32 of them was over the collector's young threshold (700), so every burst ran a young
    collection, and with them the full ones (~30 ms with McpApp's heap) that made the tail.
    """
    listening = listener.extra(SocketAttribute.raw_socket)
    open_stream = _stream_opener(state.on_trio)
    slots = state.slots
    accepted = 0
    while True:
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            await slots.acquire()
        try:
            sock = await _accept(listening)
        except BaseException:
            slots.release()
            raise
        if sock is None:
            slots.release()
        else:
            connections.start_soon(_handle, sock, open_stream, state)  # the slot goes with it
            accepted += 1
            if accepted % _ACCEPT_BURST == 0:
                await anyio.lowlevel.checkpoint()  # the burst's tasks start (see above)


# The accept loop yields at least once every so many new connections, for their tasks to start.
_ACCEPT_BURST = 8


async def _accept(listening: socket.socket) -> socket.socket | None:
    """The next connection in the backlog, once there is one; None when there was one, but it is gone
    (its peer gave up) or the process is out of descriptors for it."""
    while True:
        try:
            sock, _ = listening.accept()
        except (BlockingIOError, InterruptedError):
            await anyio.wait_readable(listening)
            continue
        except ConnectionAbortedError:
            return None
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            _logger.warning("accept failed (%s); retrying", os.strerror(exc.errno or 0))
            await anyio.sleep(0.1)  # give the others a moment to close theirs
            return None
        return sock


_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


_StreamOpener = Callable[[socket.socket], Awaitable[DirectSocketStream]]


def _stream_opener(on_trio: bool) -> _StreamOpener:
    if on_trio:
        from .trio_stream import trio_stream_opener

        return trio_stream_opener()
    return asyncio_stream_opener()


def prepare_accepted(sock: socket.socket) -> None:
    """Non-blocking, and for TCP no Nagle: an SSE head and its first event are separate small writes,
    and with Nagle the second waits for the peer's delayed ACK (40 ms). (Neither wrapper sets it on
    a socket accepted outside a listener: the accepted socket's protocol number reads 0.)"""
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _handle(sock: socket.socket, open_stream: _StreamOpener, state: ServerState) -> None:
    config = state.config
    try:
        prepare_accepted(sock)
        client, server = _addresses(sock)
        stream = await open_stream(sock)
    except BaseException as exc:
        state.slots.release()
        sock.close()
        if isinstance(exc, OSError):
            return  # the peer reset the connection before it was wrapped
        raise
    try:
        byte_stream: anyio.abc.ByteStream = stream
        scheme = "http"
        if config.ssl_context is not None:
            scheme = "https"
            wrapped = await _tls(stream, config.ssl_context, config.tls_handshake_timeout)
            if wrapped is None:
                return
            byte_stream = wrapped
        connection = HttpConnection(state, byte_stream, client, server, scheme, abort=stream.abort)
        state.connections.add(connection)
        try:
            await connection.run()
        finally:
            state.connections.discard(connection)
            if state.stopping and not state.connections:
                state.all_closed.set()
    finally:
        state.slots.release()
        stream.abort()  # (the connection has closed it already, unless it never got that far)


async def _tls(stream: anyio.abc.SocketStream, context: ssl.SSLContext, seconds: float) -> TLSStream | None:
    with anyio.move_on_after(seconds):
        try:
            return await TLSStream.wrap(stream, server_side=True, ssl_context=context, standard_compatible=False)
        except (ssl.SSLError, OSError, anyio.BrokenResourceError, anyio.EndOfStream):
            return None
    return None


def _addresses(sock: socket.socket) -> tuple[tuple[str, int] | None, tuple[str, int | None] | None]:
    """The scope's `client` and `server`, from the socket itself (the stream's `extra` builds every
    attribute's getter for each lookup)."""
    if sock.family == socket.AF_UNIX:
        return None, (str(sock.getsockname()), None)
    remote, local = sock.getpeername(), sock.getsockname()
    return (str(remote[0]), int(remote[1])), (str(local[0]), int(local[1]))
