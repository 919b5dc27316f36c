"""The built-in server's own work per request, in process: one keep-alive connection's loop over an
in-memory stream, no socket, no scheduler, serving the floor app (`benchmarks.apps.floor_app`).

`asgi_mcp._serving.http1.connection.HttpConnection` reads `-n` modern `tools/call` requests from a
stream whose reads return at once, and answers each; the loop runs without yielding, so what it
costs is the server's Python: head parse and checks, the ASGI scope, `receive`, `send`, the
response head. Prints µs per request for each round. Under callgrind, two request counts give
instructions per request, whatever the machine's other load (`benchmarks.instructions` explains
why); fix the hash seed, which alone moves the count by about 3%:

    python -m benchmarks.connection_loop [-n 50000] [--backend trio] [--parser h11]
    export PYTHONHASHSEED=0
    valgrind --tool=callgrind python -m benchmarks.connection_loop -n 1000 --rounds 1   # Ir(1000)
    valgrind --tool=callgrind python -m benchmarks.connection_loop -n 3000 --rounds 1   # Ir(3000)
    # (Ir(3000) - Ir(1000)) / 2000: instructions per request
"""

from __future__ import annotations

import time

import anyio
import anyio.abc

from asgi_mcp._serving.http1.config import ServerConfig
from asgi_mcp._serving.http1.connection import HttpConnection
from asgi_mcp._serving.http1.parsers import make_parser
from asgi_mcp._serving.http1.state import ServerState

from .apps import floor_app
from .cli import documented_parser
from .load import MODERN_VERSION, tools_call_body


def request_bytes() -> bytes:
    before_id, after_id = tools_call_body(modern=True)
    body = f"{before_id}1{after_id}".encode()
    head = (
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: application/json\r\n"
        "accept: application/json, text/event-stream\r\n"
        f"mcp-protocol-version: {MODERN_VERSION}\r\nmcp-method: tools/call\r\nmcp-name: echo\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class RepeatingStream(anyio.abc.ByteStream):
    """Returns the same request `count` times, then its end; counts what is sent."""

    def __init__(self, request: bytes, count: int) -> None:
        self.request = request
        self.left = count
        self.sent = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.left:
            raise anyio.EndOfStream
        self.left -= 1
        return self.request

    async def send(self, item: bytes) -> None:
        self.sent += 1

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def run(count: int, rounds: int, parser: str) -> None:
    config = ServerConfig(parser="httptools" if parser == "httptools" else "h11")
    state = ServerState(floor_app, config, make_parser(config.parser, config.max_headers))
    request = request_bytes()
    for _ in range(rounds):
        stream = RepeatingStream(request, count)
        connection = HttpConnection(
            state, stream, ("127.0.0.1", 40000), ("127.0.0.1", 8000), "http", abort=lambda: None
        )
        started = time.perf_counter()
        await connection.run()
        elapsed = time.perf_counter() - started
        if stream.sent != count:
            raise SystemExit(f"{stream.sent} answers to {count} requests")
        print(f"{elapsed / count * 1e6:.2f} µs per request", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = documented_parser("benchmarks.connection_loop", __doc__)
    parser.add_argument("-n", type=int, default=50_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--parser", choices=("httptools", "h11"), default="httptools")
    args = parser.parse_args(argv)
    anyio.run(run, args.n, args.rounds, args.parser, backend=args.backend)


if __name__ == "__main__":
    main()
