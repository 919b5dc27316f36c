"""ASGI plumbing shared by both eras: the request view handlers see, and reading a body under its limit."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest

from asgi_mcp import Headers, ProtocolError
from asgi_mcp._core.asgi import (
    DIRECT_JSON_EXTENSION,
    INNER_APP_ATTRIBUTE,
    REQUEST_CANCEL_EXTENSION,
    BodyTooLarge,
    HttpRequest,
    direct_json_sender,
    read_body,
    request_canceller,
    send_json_bytes,
)

pytestmark = pytest.mark.anyio


def test_http_request_is_a_frozen_view() -> None:
    scope: dict[str, Any] = {"type": "http", "client": ("10.0.0.1", 1234)}
    headers = Headers([(b"x-a", b"1")])
    request = HttpRequest("POST", "/mcp", headers, scope)
    assert (request.method, request.path, request.headers, request.scope) == ("POST", "/mcp", headers, scope)
    assert request.client == ("10.0.0.1", 1234)
    assert [field.name for field in dataclasses.fields(request)] == ["method", "path", "headers", "scope"]
    assert repr(request) == "HttpRequest(method='POST', path='/mcp', headers=Headers(['x-a']))"
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.method = "GET"  # type: ignore[misc]
    assert request != HttpRequest("POST", "/mcp", headers, scope)  # identity, as before


def _receiving(*chunks: bytes) -> Any:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


@pytest.mark.parametrize(
    ("line", "declared"),
    [(b"5", 5), (b" 5\t", 5), (b"+5", 5), (b"0_5", 5), (b"\xa05", 5), (b"5\x85", 5)],
)
async def test_content_length_reads_as_its_text_does(line: bytes, declared: int) -> None:
    # The line as sent (`Headers.raw`): `int` of the bytes where it reads them, else of the text
    # (latin-1, which `int` also trims of Unicode spaces such as NBSP and NEL).
    assert int(Headers([(b"content-length", line)])["content-length"]) == declared
    with anyio.fail_after(5):
        assert await read_body(_receiving(b"12345"), 10, line) == b"12345"
        with pytest.raises(BodyTooLarge):
            await read_body(_receiving(b"12345"), declared - 1, line)


@pytest.mark.parametrize("line", [b"", b"five", b"5.0", b"\xff", b"0x5"])
async def test_a_content_length_that_is_no_integer_is_400(line: bytes) -> None:
    with anyio.fail_after(5), pytest.raises(ProtocolError) as caught:
        await read_body(_receiving(b"12345"), 10, line)
    assert (caught.value.status, caught.value.message) == (400, "Invalid Content-Length header")


class _Lender:
    def __init__(self, app: object) -> None:
        self.app = app
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


class _Wrapper:
    def __init__(self, inner: object, *, says_no_scope: bool) -> None:
        if says_no_scope:
            setattr(self, INNER_APP_ATTRIBUTE, inner)


def test_a_lent_scope_is_taken_only_by_the_app_the_server_calls_or_one_behind_a_scopeless_wrapper() -> None:
    app, other = object(), object()

    def canceller(served: object, asking: object) -> Any:
        lender = _Lender(served)
        return request_canceller({"extensions": {REQUEST_CANCEL_EXTENSION: lender}}, asking)

    assert canceller(app, app) is not None
    assert canceller(_Wrapper(app, says_no_scope=True), app) is not None
    assert canceller(_Wrapper(app, says_no_scope=False), app) is None  # a middleware: it may hold a scope
    assert canceller(other, app) is None
    assert canceller(_Wrapper(other, says_no_scope=False), None) is None  # no app to match: never taken
    assert request_canceller({"extensions": {}}, app) is None
    assert request_canceller({}, app) is None
    lender = _Lender(app)
    cancel = request_canceller({"extensions": {REQUEST_CANCEL_EXTENSION: lender}}, app)
    assert cancel is not None
    cancel()
    assert lender.cancelled == 1


class _JsonServer:
    def __init__(self, app: object) -> None:
        self.app = app
        self.answers: list[tuple[int, bytes]] = []

    async def send_json(self, status: int, body: bytes) -> None:
        self.answers.append((status, body))


def test_the_whole_answer_call_is_taken_on_the_same_terms_as_a_lent_scope() -> None:
    app, other = object(), object()

    def sender(served: object, asking: object) -> Any:
        return direct_json_sender({"extensions": {DIRECT_JSON_EXTENSION: _JsonServer(served)}}, asking)

    assert sender(app, app) is not None
    assert sender(_Wrapper(app, says_no_scope=True), app) is not None
    assert sender(_Wrapper(app, says_no_scope=False), app) is None  # a middleware: it would not see the answer
    assert sender(other, app) is None
    assert sender(app, None) is None
    assert direct_json_sender({"extensions": {}}, app) is None
    assert direct_json_sender({}, app) is None


class _Sender:
    """An ASGI `send` that may carry a whole-answer call, as `Responder` does."""

    def __init__(self, direct_json: Any) -> None:
        self.direct_json = direct_json
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def test_a_json_answer_takes_the_whole_answer_call_unless_it_has_headers_of_its_own() -> None:
    server = _JsonServer(None)
    send = _Sender(server.send_json)
    await send_json_bytes(send, 404, b"{}")
    assert (server.answers, send.messages) == ([(404, b"{}")], [])
    await send_json_bytes(send, 200, b"[]", [(b"mcp-session-id", b"s")])
    assert server.answers == [(404, b"{}")]
    assert [message["type"] for message in send.messages] == ["http.response.start", "http.response.body"]
    assert send.messages[0]["headers"][-1] == (b"mcp-session-id", b"s")
    plain = _Sender(None)
    await send_json_bytes(plain, 200, b"[]")
    assert len(plain.messages) == 2
