"""The `asgi-mcp` command: `serve MODULE:ATTR` and `demo`, on the built-in HTTP/1.1 server (or
hypercorn with `--server hypercorn`), on asyncio or Trio.

Being the program, not the library, the CLI configures logging and handles SIGINT/SIGTERM (as a
graceful stop). Needs the `server` extra.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import anyio

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport there
    from exceptiongroup import BaseExceptionGroup

from .._app.app import McpApp
from .._core.errors import ConfigurationError
from .._kernel.hosting import as_lowlevel_server
from .fleet import add_fleet_parser, run_fleet
from .hypercorn import url_host
from .plain import is_asgi_app, serve_plain
from .runs import require_server
from .tokens import add_tokens_parser, run_tokens

__all__ = ["main"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
SERVER_CHOICES = ("builtin", "hypercorn")
LOOP_CHOICES = ("auto", "asyncio", "uvloop")
LOOP_HELP = "on asyncio, the event loop: uvloop when installed (auto, as uvicorn does), the standard one, or uvloop"
SERVER_HELP = "the HTTP server: the built-in HTTP/1.1 one (default) or hypercorn (HTTP/2, ...)"
REDIS_HELP = (
    "share sessions, streams and events with every worker using this Redis/Valkey URL (redis://, rediss://); "
    "ASGI_MCP_FLEET_SECRET, if set, keys the session owners' digests"
)


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asgi-mcp", description="Serve MCP servers over Streamable HTTP.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve an McpApp, an SDK Server or MCPServer, any ASGI app, or a zero-argument factory of one",
        description="Serve MODULE:ATTR: an McpApp, an mcp Server or MCPServer, any other ASGI 3 app, or a "
        "zero-argument function (sync or async) returning one. MODULE is imported from the current directory.",
    )
    serve.add_argument("target", metavar="MODULE:ATTR")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: 8000)")
    serve.add_argument("--path", default=None, help="endpoint path for a Server/MCPServer (default: /mcp)")
    serve.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    serve.add_argument("--loop", choices=LOOP_CHOICES, default="auto", help=LOOP_HELP)
    serve.add_argument("--server", choices=SERVER_CHOICES, default="builtin", help=SERVER_HELP)
    serve.add_argument(
        "--json-response", action="store_true", default=None, help="answer with JSON bodies instead of SSE streams"
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    serve.add_argument("--redis", metavar="URL", default=None, help=REDIS_HELP)

    demo = commands.add_parser(
        "demo",
        help="a multi-tenant demo: three bearer tokens, each with its own tools",
        description="Serve three demo tenants (free, pro, admin) and print each token's client configuration.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: 8000)")
    demo.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    demo.add_argument("--loop", choices=LOOP_CHOICES, default="auto", help=LOOP_HELP)
    demo.add_argument("--server", choices=SERVER_CHOICES, default="builtin", help=SERVER_HELP)
    demo.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    demo.add_argument("--redis", metavar="URL", default=None, help=REDIS_HELP)
    add_tokens_parser(commands)
    add_fleet_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "warning").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    backend = "trio" if getattr(args, "trio", False) else "asyncio"
    try:
        if args.command == "tokens":
            anyio.run(run_tokens, args, _say)
        elif args.command == "fleet":
            anyio.run(run_fleet, args, _say)
        elif args.command == "serve":
            target = _import_target(args.target)
            anyio.run(_serve, target, args, backend=backend, backend_options=_loop_options(args))
        else:
            anyio.run(_demo, args, backend=backend, backend_options=_loop_options(args))
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was listening
        return 130
    except Exception as exc:
        problem = _user_error(exc)
        if problem is None:
            raise
        sys.stderr.write(f"asgi-mcp: error: {problem}\n")
        return 1
    return 0


def _user_error(exc: BaseException) -> BaseException | None:
    """The problem a user can fix (a taken port, a bad target, a missing extra), also when it comes
    out of a task group wrapped in an exception group of one; None for anything else."""
    while isinstance(exc, BaseExceptionGroup):
        members: tuple[BaseException, ...] = cast("BaseExceptionGroup[BaseException]", exc).exceptions
        if len(members) != 1:
            return None
        exc = members[0]
    return exc if isinstance(exc, (CliError, ConfigurationError, OSError)) else None


def _loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """anyio's options for `--loop`: uvloop on asyncio when asked for, or (auto) when installed."""
    if args.trio:
        if args.loop == "uvloop":
            raise CliError("--loop uvloop is an asyncio event loop; it does not go with --trio")
        return {}
    if args.loop == "asyncio":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        if args.loop == "uvloop":
            raise CliError("--loop uvloop needs uvloop: pip install uvloop")
        return {}
    return {"use_uvloop": True}


def _import_target(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliError(f"expected MODULE:ATTR, got {spec!r}")
    # As uvicorn and hypercorn do: the current directory's modules are importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise CliError(f"{module_name!r} has no attribute {attr!r}") from None
    return target


def _say(text: str) -> None:
    """A line for the console, flushed at once (the output may be a pipe someone is reading)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _is_server(obj: Any) -> bool:
    try:
        as_lowlevel_server(obj)
    except ConfigurationError:
        return False
    return True


async def _resolve_app(target: Any, args: argparse.Namespace) -> Any:
    """The app to serve: the target itself (an McpApp or any ASGI app), an McpApp wrapping its
    server, or what its factory returns."""
    obj = target
    if not isinstance(obj, McpApp) and not _is_server(obj) and not is_asgi_app(obj) and callable(obj):
        # Called inside the event loop: async factories, and objects bound to the running loop.
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    if isinstance(obj, McpApp) or (not _is_server(obj) and is_asgi_app(obj)):
        if args.path is not None or args.json_response is not None or args.redis is not None:
            where = "the McpApp" if isinstance(obj, McpApp) else "the app"
            raise CliError(f"--path, --json-response and --redis apply to a Server or MCPServer; set them on {where}")
        return obj
    if not _is_server(obj):
        raise CliError(
            f"{args.target} is a {type(obj).__name__}: expected an McpApp, an mcp Server or MCPServer, "
            "an ASGI app, or a zero-argument factory returning one"
        )
    return McpApp(obj, path=args.path or "/mcp", json_response=bool(args.json_response), **_fleet_options(args))


def _fleet_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.redis is None:
        return {}
    return {"redis_url": args.redis, "fleet_secret": os.environ.get("ASGI_MCP_FLEET_SECRET")}


async def _serve(target: Any, args: argparse.Namespace) -> None:
    app = await _resolve_app(target, args)
    if not isinstance(app, McpApp):
        await _serve_plain(app, args)
        return
    runner_class = require_server(args.server, "trio" if args.trio else "asyncio")
    runner = runner_class(app, host=args.host, port=args.port, access_log=True)
    async with anyio.create_task_group() as tg:
        port = await tg.start(runner.run)
        suffix = "/" if app.config.path == "/" else app.config.path
        _say(f"asgi-mcp: serving MCP at http://{url_host(args.host)}:{port}{suffix} (Ctrl-C to stop)")
        await _until_signalled()
        runner.shutdown()


async def _serve_plain(app: Any, args: argparse.Namespace) -> None:
    """Any other ASGI app, its lifespan run by the server (see `plain.py`)."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        serving = partial(serve_plain, app, server=args.server, host=args.host, port=args.port, access_log=True)
        port = await tg.start(partial(serving, stop=stop))
        _say(f"asgi-mcp: serving {args.target} at http://{url_host(args.host)}:{port}/ (Ctrl-C to stop)")
        await _until_signalled()
        stop.set()


async def _demo(args: argparse.Namespace) -> None:
    from .demo import banner, build_demo_server

    server = build_demo_server(host=args.host, port=args.port, server_kind=args.server, **_fleet_options(args))
    server.on("session_created", lambda e: _say(f"[{e.tenant_id}] session opened on {e.server_name}"))
    server.on("session_ended", lambda e: _say(f"[{e.tenant_id}] session ended ({e.reason})"))
    server.on(
        "tool_called",
        lambda e: _say(
            f"[{e.tenant_id}] {e.tool_name}: {'ok' if e.success else 'failed'} in {e.duration * 1000:.1f} ms"
        ),
    )
    async with server:
        info = server.server_info()
        assert info is not None
        _say(banner(info))
        await _until_signalled()


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM (the program's own handlers, installed only by the CLI)."""
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                _say("asgi-mcp: stopping")
                return
    except NotImplementedError:  # no signal receivers (Windows on asyncio): Ctrl-C raises instead
        await anyio.sleep_forever()
