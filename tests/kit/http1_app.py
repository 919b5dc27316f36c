"""A plain ASGI app for the built-in server's tests: one route per behaviour, a `Probe` to watch it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from asgi_mcp._core.asgi import DIRECT_JSON_EXTENSION, REQUEST_CANCEL_EXTENSION, send_json_bytes


@dataclass
class Probe:
    gate: anyio.Event = field(default_factory=anyio.Event)
    started: anyio.Event = field(default_factory=anyio.Event)
    disconnected: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    lifespan_stopping: anyio.Event = field(default_factory=anyio.Event)
    requests: list[str] = field(default_factory=list)
    scopes: list[dict[str, Any]] = field(default_factory=list)
    sent_bytes: int = 0
    send_error: BaseException | None = None
    in_flight: int = 0
    lifespan: list[str] = field(default_factory=list)
    cancel_call: Callable[[], None] | None = None  # the server's canceller of the call (`cancel_me`)
    cancelled: list[str] = field(default_factory=list)  # what saw its call cancelled
    went_on: bool = False  # `flood_then_go_on` passed a checkpoint after its send failed


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def _reply(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProbeApp:
    def __init__(self, probe: Probe, *, lifespan: bool = True) -> None:
        self.probe = probe
        self.lifespan = lifespan
        self.background: anyio.abc.TaskGroup | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert scope["type"] == "http"
        probe = self.probe
        probe.requests.append(scope["path"])
        probe.scopes.append(scope)
        route = getattr(self, "route_" + scope["path"].strip("/").replace("-", "_").split("/")[-1], None)
        if route is None:
            await _reply(send, 404, b"not found")
            return
        probe.in_flight += 1
        try:
            await route(scope, receive, send)
        finally:
            probe.in_flight -= 1
            probe.finished.set()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        if not self.lifespan:
            raise RuntimeError("no lifespan here")
        async with anyio.create_task_group() as self.background:
            while True:
                message = await receive()
                self.probe.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.probe.lifespan_stopping.set()
                    self.background.cancel_scope.cancel()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def route_echo(self, scope: Any, receive: Any, send: Any) -> None:
        await _reply(send, 200, await _read_body(receive))

    async def route_chunked(self, scope: Any, receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (body[:1], body[1:]):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def route_stream(self, scope: Any, receive: Any, send: Any) -> None:
        """An SSE stream: one event, then the next once the gate opens (or it ends at lifespan shutdown)."""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        self.probe.started.set()
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.probe.disconnected.set()
                tg.cancel_scope.cancel()

            async def ended_by_shutdown() -> None:
                await self.probe.lifespan_stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(ended_by_shutdown)
            await self.probe.gate.wait()
            await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
            tg.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b""})

    async def route_flood(self, scope: Any, receive: Any, send: Any) -> None:
        """Sends 64 MiB in 64 KiB chunks, counting what `send` accepted."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for _ in range(1024):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.probe.sent_bytes += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    async def route_flood_shielded(self, scope: Any, receive: Any, send: Any) -> None:
        """As `flood`, shielded from cancellation (as an app that must settle what it started)."""
        with anyio.CancelScope(shield=True):
            await self.route_flood(scope, receive, send)

    async def route_flood_then_go_on(self, scope: Any, receive: Any, send: Any) -> None:
        """As `flood`; once `send` fails, notes what it raised and passes a checkpoint."""
        try:
            await self.route_flood(scope, receive, send)
        except OSError as exc:
            self.probe.send_error = exc
        await anyio.lowlevel.checkpoint()
        self.probe.went_on = True

    async def route_cancel_me(self, scope: Any, receive: Any, send: Any) -> None:
        """Hands the server's canceller of its call to the test and waits, under no scope of its own,
        for the test to use it; then answers, shielded, since its call stays cancelled."""
        await _read_body(receive)
        self.probe.cancel_call = scope["extensions"][REQUEST_CANCEL_EXTENSION].cancel
        self.probe.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.probe.cancelled.append(scope["path"])
            with anyio.CancelScope(shield=True):
                await _reply(send, 200, b"cancelled")
            raise

    async def route_json(self, scope: Any, receive: Any, send: Any) -> None:
        """A JSON answer (status from the query, `?twice` sends it twice), through the server's
        whole-answer call under `/direct/`, else as the two messages (`send_json_bytes`)."""
        body = await _read_body(receive) or b'{"ok":true}'
        query = scope["query_string"].decode()
        status = int(query.split("status=")[1].split("&")[0]) if "status=" in query else 200
        direct = scope["path"].startswith("/direct/")
        for _ in range(2 if "twice" in query else 1):
            try:
                await self._answer_json(scope, send, status, body, direct=direct)
            except RuntimeError as exc:  # noqa: PERF203 (a test's second answer)
                self.probe.send_error = exc

    @staticmethod
    async def _answer_json(scope: Any, send: Any, status: int, body: bytes, *, direct: bool) -> None:
        if direct:
            await scope["extensions"][DIRECT_JSON_EXTENSION].send_json(status, body)
        else:
            await send_json_bytes(send, status, body)

    async def route_trickle(self, scope: Any, receive: Any, send: Any) -> None:
        """Streams small chunks with no await but `send` (at most 64 MiB), counting what `send` accepted."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 64
        for _ in range(1 << 20):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.probe.sent_bytes += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    async def route_hold(self, scope: Any, receive: Any, send: Any) -> None:
        """Waits for the gate, then answers (under `/direct/`, through the whole-answer call)."""
        await _read_body(receive)
        self.probe.started.set()
        await self.probe.gate.wait()
        if scope["path"].startswith("/direct/"):
            await scope["extensions"][DIRECT_JSON_EXTENSION].send_json(200, b"held")
        else:
            await _reply(send, 200, b"held")

    async def route_scope(self, scope: Any, receive: Any, send: Any) -> None:
        keys = ("http_version", "method", "scheme", "root_path", "path", "raw_path", "query_string", "client", "server")
        view = {key: scope[key].decode("latin-1") if isinstance(scope[key], bytes) else scope[key] for key in keys}
        view["state"] = "state" in scope
        await _reply(send, 200, json.dumps(view).encode(), [(b"content-type", b"application/json")])

    async def route_leak(self, scope: Any, receive: Any, send: Any) -> None:
        """Leaves a task reading `receive` behind, beyond the request (as apps with session-wide tasks do)."""
        assert self.background is not None
        reading = anyio.Event()

        async def watch() -> None:
            reading.set()
            while (await receive())["type"] != "http.disconnect":
                pass

        await _read_body(receive)
        self.background.start_soon(watch)
        await reading.wait()
        with anyio.move_on_after(1):
            await anyio.wait_all_tasks_blocked()  # the watcher is inside receive(), reading the socket
        await _reply(send, 200, b"left a reader")

    async def route_boom(self, scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def route_boom_late(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")

    async def route_until_gone(self, scope: Any, receive: Any, send: Any) -> None:
        """Streams until `send` raises (the client left), notes what it raised and lets it propagate."""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        self.probe.started.set()
        try:
            while True:
                await send({"type": "http.response.body", "body": b": ping\n\n" * 64, "more_body": True})
        except BaseException as exc:
            self.probe.send_error = exc
            raise

    async def route_reply_after_disconnect(self, scope: Any, receive: Any, send: Any) -> None:
        """Reads the body, waits for `http.disconnect`, then answers anyway."""
        await _read_body(receive)
        while (await receive())["type"] != "http.disconnect":
            pass
        await _reply(send, 200, b"answered")

    async def route_start_then_read(self, scope: Any, receive: Any, send: Any) -> None:
        """Starts its (chunked) response, then reads the body and sends it back."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": await _read_body(receive)})

    async def route_boom_at_start(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom before any body")

    async def route_overlong(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"longer than 3"})

    async def route_start_only(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def route_late_body(self, scope: Any, receive: Any, send: Any) -> None:
        """Starts the response, then sends its body once the gate opens."""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        self.probe.started.set()
        await self.probe.gate.wait()
        await send({"type": "http.response.body", "body": b"data: late\n\n"})

    async def route_silent(self, scope: Any, receive: Any, send: Any) -> None:
        return

    async def route_badheader(self, scope: Any, receive: Any, send: Any) -> None:
        await _reply(send, 200, b"x", [(b"x-injected", b"a\r\nset-cookie: evil=1")])
