"""Serve the conformance fixture through asgi_mcp's `McpApp`.

    python tests/conformance/serve.py --port P [--host 127.0.0.1] [--trio] [--builtin h11|httptools]

asyncio runs under uvicorn; `--trio` under hypercorn's Trio worker; `--builtin PARSER` under the
built-in server (on asyncio, or Trio with `--trio`). Resumability is on
(`InMemoryEventStore`, retry 100 ms) so SEP-1699 polling is exercised. Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture import build_server  # imported after the sys.path entry above

from asgi_mcp import InMemoryEventStore, McpApp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--trio", action="store_true")
    parser.add_argument("--builtin", choices=("h11", "httptools"), default=None)
    args = parser.parse_args()
    app = McpApp(build_server(), event_store=InMemoryEventStore(), retry_interval=100)
    if args.builtin is not None:
        serve_builtin(app, args.host, args.port, args.builtin, "trio" if args.trio else "asyncio")
    elif args.trio:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{args.host}:{args.port}"]
        config.graceful_timeout = 2.0

        async def run() -> None:
            stop = trio.Event()

            def on_signal(*_: object) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

        trio.run(run)
    else:
        import uvicorn

        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def serve_builtin(app: McpApp, host: str, port: int, parser: str, backend: str) -> None:
    import anyio

    from asgi_mcp._serving.http1 import ServerConfig, serve

    config = ServerConfig(host=host, port=port, parser=parser, graceful_timeout=2.0)  # type: ignore[arg-type]

    async def run() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        stop.set()
                        return

            tg.start_soon(on_signals)
            await serve(app, config, shutdown_trigger=stop.wait)
            tg.cancel_scope.cancel()

    anyio.run(run, backend=backend)


if __name__ == "__main__":
    main()
