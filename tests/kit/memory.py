"""The app in memory: a small streaming ASGI client, the lifespan driver, and MCP sessions over them.

httpx's ASGITransport waits for the whole response, which never comes for an SSE stream. Here the
app runs in a task of the test's task group: `receive` hands out the request body (in the chunks
given, so chunked uploads can be modelled with `more_body`), then blocks until the test calls
`Response.disconnect()` (or the response completed, as a real server reports it); `send` pushes
every ASGI message into a memory stream the test reads at its own pace, decoding SSE events as they
arrive. Every wait is bounded by `anyio.fail_after`, so a hung app fails the test instead of hanging it.

`serving` runs an app (its lifespan) around a client; `open_session` and `session_call` are the legacy
handshake and one call; `TokenClient` does the same as one bearer token (`tests.kit.http` is its twin
over real HTTP).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from asgi_mcp import McpApp

from .messages import LEGACY, initialize, modern, notification, request
from .sse import SSEDecoder, SSEEvent

TIMEOUT = 5.0
LOOPBACK = ("127.0.0.1", 8000)


class Response:
    """One in-flight ASGI response, read incrementally."""

    def __init__(self, messages: MemoryObjectReceiveStream[dict[str, Any]], disconnect: anyio.Event, done: anyio.Event):
        self._messages = messages
        self._disconnect = disconnect
        self.app_done = done  # set when the app's __call__ returned
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False  # the app sent more_body=False
        self.gone = False  # the client disconnected
        self._decoder = SSEDecoder()
        self._events: list[SSEEvent] = []

    # -- headers ---------------------------------------------------------------------------------

    def header(self, name: str) -> str | None:
        name_b = name.lower().encode()
        for key, value in self.raw_headers:
            if key.lower() == name_b:
                return value.decode("latin-1")
        return None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").partition(";")[0].strip()

    @property
    def session_id(self) -> str | None:
        return self.header("mcp-session-id")

    # -- body ------------------------------------------------------------------------------------

    async def started(self, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109 - a bound on a test's wait
        """Wait for `http.response.start`."""
        with anyio.fail_after(timeout):
            message = await self._messages.receive()
        assert message["type"] == "http.response.start", message
        self.status = message["status"]
        self.raw_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]

    async def _next_chunk(self) -> bool:
        """Read one body message; False once the response is complete."""
        if self.complete:
            return False
        try:
            message = await self._messages.receive()
        except anyio.EndOfStream:
            raise AssertionError("the app returned without completing its response") from None
        assert message["type"] == "http.response.body", message
        chunk = bytes(message.get("body", b""))
        self.body += chunk
        self._events.extend(self._decoder.feed(chunk))
        if not message.get("more_body", False):
            self.complete = True
            self._disconnect.set()  # what a server reports once the response is done
        return True

    async def read(self, timeout: float = TIMEOUT) -> bytes:  # noqa: ASYNC109 - a bound on a test's wait
        """The whole body (waits for the response to complete)."""
        with anyio.fail_after(timeout):
            while await self._next_chunk():
                pass
        return self.body

    async def json(self) -> Any:
        return json.loads(await self.read())

    async def next_event(self, timeout: float = TIMEOUT) -> SSEEvent:  # noqa: ASYNC109 - a bound on a test's wait
        """The next SSE event (comments skipped); fails if the stream ends first."""
        with anyio.fail_after(timeout):
            while not self._events:
                if not await self._next_chunk():
                    raise AssertionError(f"SSE stream ended; body so far: {self.body!r}")
        return self._events.pop(0)

    async def next_message(self, timeout: float = TIMEOUT) -> dict[str, Any]:  # noqa: ASYNC109 - a bound on a test's wait
        """The next SSE event carrying a JSON-RPC message (priming events skipped)."""
        while True:
            event = await self.next_event(timeout)
            if event.data:
                message: dict[str, Any] = json.loads(event.data)
                return message

    async def events(self, timeout: float = TIMEOUT) -> list[SSEEvent]:  # noqa: ASYNC109 - a bound on a test's wait
        """Every remaining event, reading until the response completes."""
        await self.read(timeout)
        events, self._events = self._events, []
        return events

    async def messages(self, timeout: float = TIMEOUT) -> list[dict[str, Any]]:  # noqa: ASYNC109 - a bound on a test's wait
        return [json.loads(e.data) for e in await self.events(timeout) if e.data]

    async def next_comment(self, timeout: float = TIMEOUT) -> str:  # noqa: ASYNC109 - a bound on a test's wait
        """Read on until an SSE comment line arrives; fails if the stream ends first."""
        seen = len(self.comments)
        with anyio.fail_after(timeout):
            while len(self.comments) == seen:
                if not await self._next_chunk():
                    raise AssertionError(f"SSE stream ended; body so far: {self.body!r}")
        return self.comments[seen]

    @property
    def comments(self) -> list[str]:
        return self._decoder.comments

    def disconnect(self) -> None:
        """The client goes away: `receive` now returns `http.disconnect`, `send` raises OSError."""
        self.gone = True
        self._disconnect.set()


class AsgiClient:
    """Calls an ASGI app in-process; every app call runs in `task_group`."""

    def __init__(
        self,
        app: Any,
        task_group: anyio.abc.TaskGroup,
        *,
        server: tuple[str, int] | None = LOOPBACK,
        host: str = "127.0.0.1:8000",
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.tg = task_group
        self.server = server
        self.host = host
        self.path = path

    def scope(
        self, method: str, path: str | None, headers: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        names = {name.lower() for name, _ in items}
        if "host" not in names:
            items.insert(0, ("host", self.host))
        full_path = path if path is not None else self.path
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": full_path,
            "raw_path": full_path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items],
            "server": self.server,
            "client": ("127.0.0.1", 50000),
        }

    async def request(
        self,
        method: str,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        body: bytes | Sequence[bytes] = b"",
        path: str | None = None,
        scope: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> Response:
        """Start a request; returns once the response's status and headers arrived (or at once: `wait=False`,
        then `await response.started()`)."""
        chunks = [body] if isinstance(body, bytes) else list(body)
        send_messages, receive_messages = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        disconnect = anyio.Event()
        done = anyio.Event()
        the_scope = scope if scope is not None else self.scope(method, path, headers)

        async def receive() -> dict[str, Any]:
            if chunks:
                chunk = chunks.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if response.gone:
                raise OSError("client disconnected")  # ASGI 2.4: sending on a closed connection
            await send_messages.send(message)

        async def run() -> None:
            async with send_messages:
                try:
                    await self.app(the_scope, receive, send)
                finally:
                    done.set()

        response = Response(receive_messages, disconnect, done)
        self.tg.start_soon(run)
        if wait:
            await response.started()
        return response

    # -- MCP-flavoured shortcuts -----------------------------------------------------------------

    async def post(
        self,
        message: Any,
        *,
        session_id: str | None = None,
        version: str | None = None,
        accept: str = "application/json, text/event-stream",
        headers: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Response:
        all_headers = {"content-type": "application/json", "accept": accept}
        if session_id is not None:
            all_headers["mcp-session-id"] = session_id
        if version is not None:
            all_headers["mcp-protocol-version"] = version
        all_headers.update(headers or {})
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return await self.request("POST", headers=all_headers, body=body, wait=wait)

    async def get(
        self,
        session_id: str | None,
        *,
        last_event_id: str | None = None,
        accept: str = "text/event-stream",
        version: str | None = None,
    ) -> Response:
        headers = {"accept": accept}
        if session_id is not None:
            headers["mcp-session-id"] = session_id
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        if version is not None:
            headers["mcp-protocol-version"] = version
        return await self.request("GET", headers=headers)

    async def delete(self, session_id: str) -> Response:
        return await self.request("DELETE", headers={"mcp-session-id": session_id})


class Lifespan:
    """Drives the ASGI `lifespan` protocol of an app, as a server does."""

    def __init__(self, app: Any, task_group: anyio.abc.TaskGroup) -> None:
        self.app = app
        self.tg = task_group
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self._from_app, self._outbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self.done = anyio.Event()

    async def _run(self) -> None:
        async def receive() -> dict[str, Any]:
            return await self._app_inbox.receive()

        async def send(message: dict[str, Any]) -> None:
            await self._from_app.send(message)

        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}, receive, send
            )
        finally:
            self.done.set()

    async def startup(self) -> dict[str, Any]:
        self.tg.start_soon(self._run)
        await self._to_app.send({"type": "lifespan.startup"})
        with anyio.fail_after(TIMEOUT):
            return await self._outbox.receive()

    async def shutdown(self, timeout: float = TIMEOUT) -> dict[str, Any]:  # noqa: ASYNC109 - a bound on a test's wait
        await self._to_app.send({"type": "lifespan.shutdown"})
        with anyio.fail_after(timeout):
            return await self._outbox.receive()


# -- MCP sessions in memory -------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: McpApp, **client_options: Any) -> AsyncIterator[AsgiClient]:
    """Run `app` (its lifespan) and yield a client; in-flight app calls are cancelled on exit."""
    async with app.lifespan_context(), anyio.create_task_group() as tg:
        yield AsgiClient(app, tg, **client_options)
        tg.cancel_scope.cancel()


async def final_message(response: Response) -> dict[str, Any]:
    """The JSON-RPC answer of a response, whether it came as JSON or as the last SSE message."""
    if response.content_type == "application/json":
        answer: dict[str, Any] = await response.json()
        return answer
    assert response.content_type == "text/event-stream", response.raw_headers
    messages = await response.messages()
    assert messages, response.body
    return messages[-1]


async def open_session(
    client: AsgiClient,
    version: str = LEGACY,
    capabilities: dict[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> str:
    """initialize + notifications/initialized (with `headers` on both); returns the session id."""
    response = await client.post(initialize(0, version, capabilities), headers=headers)
    assert response.status == 200, (response.status, await response.read())
    answer = await final_message(response)
    assert answer["result"]["protocolVersion"] == version, answer
    session_id = response.session_id
    assert session_id is not None
    acked = await client.post(
        notification("notifications/initialized"), session_id=session_id, version=version, headers=headers
    )
    assert acked.status == 202
    return session_id


async def session_call(
    client: AsgiClient,
    session_id: str,
    message: dict[str, Any],
    *,
    version: str = LEGACY,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One request on a session; asserts a 200 and returns its JSON-RPC answer."""
    response = await client.post(message, session_id=session_id, version=version, headers=headers)
    assert response.status == 200, (response.status, await response.read())
    return await final_message(response)


async def modern_post(
    client: AsgiClient,
    request_id: int | str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    wait: bool = True,
    accept: str = "application/json, text/event-stream",
    **options: Any,
) -> Response:
    body, headers = modern(request_id, method, params, **options)
    return await client.post(body, headers=headers, wait=wait, accept=accept)


class TokenClient:
    """`AsgiClient` requests carrying `Authorization: Bearer <token>` (or none with token=None)."""

    def __init__(self, client: AsgiClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token is not None else {}

    async def post(
        self,
        message: Any,
        *,
        session_id: str | None = None,
        version: str | None = LEGACY,
        headers: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Response:
        return await self.client.post(
            message, session_id=session_id, version=version, headers={**self._auth(), **(headers or {})}, wait=wait
        )

    async def get(self, session_id: str) -> Response:
        headers = {"accept": "text/event-stream", "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        return await self.client.request("GET", headers={**headers, **self._auth()})

    async def delete(self, session_id: str) -> Response:
        headers = {"mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        return await self.client.request("DELETE", headers={**headers, **self._auth()})

    async def open_session(self) -> str:
        return await open_session(self.client, headers=self._auth())

    async def call(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        return await session_call(self.client, session_id, message, headers=self._auth())

    async def tool_names(self, session_id: str) -> set[str]:
        answer = await self.call(session_id, request(1, "tools/list"))
        return {tool["name"] for tool in answer["result"]["tools"]}

    async def modern(
        self, request_id: int, method: str, params: dict[str, Any] | None = None, *, wait: bool = True
    ) -> Response:
        body, headers = modern(request_id, method, params)
        return await self.client.post(body, headers={**headers, **self._auth()}, wait=wait)
