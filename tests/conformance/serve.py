"""Serve the conformance fixture through asgi_mcp's `McpApp`.

    python tests/conformance/serve.py --port P [--host 127.0.0.1] [--trio]

asyncio runs under uvicorn; `--trio` under hypercorn's Trio worker. Resumability is on
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
    args = parser.parse_args()
    app = McpApp(build_server(), event_store=InMemoryEventStore(), retry_interval=100)
    if args.trio:
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


if __name__ == "__main__":
    main()
