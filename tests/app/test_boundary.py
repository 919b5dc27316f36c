"""The app's error boundary (`_app/boundary.py`): what `Responder` records of an answer in one call."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_mcp._app.boundary import Responder
from asgi_mcp._core.asgi import ClientGone

pytestmark = pytest.mark.anyio


async def _no_messages(message: Any) -> None:
    raise AssertionError("an answer in one call sends no message")


async def test_an_answer_in_one_call_is_recorded_as_started_and_finished() -> None:
    answers: list[tuple[int, bytes]] = []

    async def direct(status: int, body: bytes) -> None:
        answers.append((status, body))

    assert Responder(_no_messages).direct_json is None
    responder = Responder(_no_messages, direct)
    assert (responder.started, responder.finished) == (False, False)
    assert responder.direct_json is not None
    await responder.direct_json(404, b"{}")
    assert (responder.started, responder.finished, responder.status) == (True, True, 404)
    assert answers == [(404, b"{}")]


async def test_an_answer_in_one_call_to_a_client_that_left_is_client_gone() -> None:
    async def gone(status: int, body: bytes) -> None:
        raise ConnectionResetError  # what a server's send raises then (ASGI 2.4: an OSError)

    responder = Responder(_no_messages, gone)
    assert responder.direct_json is not None
    with pytest.raises(ClientGone):
        await responder.direct_json(200, b"{}")
    assert responder.started
