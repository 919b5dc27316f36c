"""Serve the conformance fixture through the SDK's own Streamable HTTP transport (the baseline).

    python tests/conformance/serve_sdk.py --port P [--host 127.0.0.1] [--trio]

asyncio runs under uvicorn; `--trio` runs under hypercorn's Trio worker. The app is
`build_server().streamable_http_app(event_store=..., retry_interval=100)`, i.e. the SDK's session
manager with resumability on, so SEP-1699 polling (test_reconnection) can be exercised.
Stops cleanly on SIGINT/SIGTERM.
"""

import argparse
import itertools
import signal
import sys
from collections import OrderedDict
from pathlib import Path

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture import build_server  # imported after the sys.path entry above


class InMemoryEventStore(EventStore):
    """Bounded in-memory `EventStore` for SSE resumability (SEP-1699 polling).

    Event ids come from one process-wide counter, so they are unique and ordered. Caveat of the
    SDK's EventStore API: `stream_id` is the request id (or "_GET_stream") and carries no session
    id, so two sessions that reuse a request id share a stream key; a replay could then include
    the other session's later events on that key. Acceptable for a single-client baseline.
    """

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: OrderedDict[int, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)
        self._max_events = max_events

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = next(self._ids)
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._max_events:
            self._events.popitem(last=False)
        return str(event_id)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        entry = self._events.get(after)
        if entry is None:
            return None
        stream_id = entry[0]
        # Snapshot first: new events may be stored while the callback awaits.
        backlog = [(eid, msg) for eid, (sid, msg) in self._events.items() if eid > after and sid == stream_id]
        for event_id, message in backlog:
            if message is not None:  # priming events (None) carry no data to replay
                await send_callback(EventMessage(message, str(event_id)))
        return stream_id


def build_app(host: str) -> Starlette:
    # `host` feeds the SDK's default DNS-rebinding protection (localhost-only allow-lists).
    return build_server().streamable_http_app(event_store=InMemoryEventStore(), retry_interval=100, host=host)


def serve_asyncio(host: str, port: int) -> None:
    import uvicorn

    # uvicorn installs its own SIGINT/SIGTERM handlers for a graceful stop.
    uvicorn.run(build_app(host), host=host, port=port, log_level="warning", lifespan="on")


def serve_trio(host: str, port: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve  # pyright: ignore[reportUnknownVariableType]

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0

    async def main() -> None:
        async def shutdown_trigger() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return

        await serve(build_app(host), config, shutdown_trigger=shutdown_trigger, mode="asgi")  # type: ignore[arg-type]

    trio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--trio", action="store_true", help="hypercorn + Trio instead of uvicorn + asyncio")
    args = parser.parse_args(argv)
    if args.trio:
        serve_trio(args.host, args.port)
    else:
        serve_asyncio(args.host, args.port)


if __name__ == "__main__":
    main()
