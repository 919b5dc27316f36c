"""The raw ASGI writes of the legacy era: JSON answers, a one-event SSE answer, and a GET's stream."""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .._core.asgi import ClientGone, Receive, Send, send_json_bytes
from .._core.jsonrpc import RequestId, dumps_bytes, error_message
from .._core.sse import SSE_HEADERS, encode_event
from .._io.response import wait_for_disconnect
from .._ports.replay import ReplayedEvent
from .streams import Frame, pump

__all__: list[str] = []

SESSION_HEADER: Final = b"mcp-session-id"
CONNECTION_CLOSED: Final = -32000


async def answer_json(answer: bytes | None, send: Send, request_id: RequestId) -> None:
    """A request's JSON answer (its JSON, encoded); None when the session ended under the request
    (DELETE from another connection, shutdown)."""
    if answer is None:
        answer = dumps_bytes(error_message(request_id, CONNECTION_CLOSED, "Session closed"))
    await send_json_bytes(send, 200, answer)


async def send_sse_once(send: Send, data: str, headers: list[tuple[bytes, bytes]]) -> None:
    """An SSE response of one event (an `initialize` answer)."""
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": encode_event(data), "more_body": False})


async def send_stream(
    send: Send,
    receive: Receive,
    *,
    session_id: str,
    replayed: list[ReplayedEvent],
    priming: Frame | None,
    frames: MemoryObjectReceiveStream[Frame] | None,
    keepalive: float,
) -> None:
    """A GET's response: the replayed events, then (when attached) the live frames until the stream
    ends, its connection is detached or the client leaves."""
    headers = [*SSE_HEADERS, (SESSION_HEADER, session_id.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # The head on the wire now, whatever follows: a server may hold it until the first body message
    # (the ASGI spec asks that; the built-in server does), and a quiet stream may have none for long.
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    for event in replayed:
        body = encode_event(event.data, event="message" if event.data else None, event_id=event.event_id)
        await send({"type": "http.response.body", "body": body, "more_body": True})
    if frames is None:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if priming is not None:
        await send({"type": "http.response.body", "body": priming.encode(), "more_body": True})
    skip = frozenset(event.event_id for event in replayed)
    ending = False

    async def send_body(message: Any) -> None:
        nonlocal ending
        ending = ending or not message.get("more_body", False)
        await send(message)

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await wait_for_disconnect(receive)
            # The disconnect that completing the response causes is no reason to cancel:
            # hypercorn (Trio) delivers it while still inside the final send, and a send
            # cancelled there leaves its keep-alive connection half-recycled until shutdown.
            if not ending:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        # A send that fails means the client left (`ClientGone`; `OSError` from the server itself):
        # the stream ends here, not as an exception group that the task group would make of it.
        with suppress(ClientGone, OSError):
            await pump(frames, send_body, keepalive=keepalive, skip=skip)
        tg.cancel_scope.cancel()
