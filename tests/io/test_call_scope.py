"""`ServerCallScope`: a request's cancel scope lent by its server, with a real anyio scope as the server's."""

from __future__ import annotations

import sys

import anyio
import anyio.lowlevel
import pytest

from asgi_mcp._io.call_scope import ServerCallScope, lingers

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport there
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

pytestmark = pytest.mark.anyio


async def a_cancellation() -> BaseException:
    """A real instance of the backend's cancellation (Trio's cannot be made directly)."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class() as exc:
            return exc
    raise AssertionError("not cancelled")


async def test_it_stops_its_own_cancellation_and_the_call_stays_cancelled() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    reached = []
    with anyio.CancelScope() as servers:
        lent = ServerCallScope(servers.cancel, cancelled)
        with lent:
            lent.cancel()
            await anyio.lowlevel.checkpoint()
            reached.append("after the cancelled checkpoint")
        assert lent.cancel_called
        assert lingers(lent)
        with pytest.raises(cancelled):
            await anyio.lowlevel.checkpoint()  # the server's scope is still cancelled
        with anyio.CancelScope(shield=True):
            await anyio.lowlevel.checkpoint()  # what the request still sends goes shielded
            reached.append("shielded")
    assert reached == ["shielded"]


async def test_cancel_reaches_the_server_once() -> None:
    calls: list[str] = []
    lent = ServerCallScope(lambda: calls.append("cancel"), anyio.get_cancelled_exc_class())
    lent.cancel()
    lent.cancel()
    assert calls == ["cancel"]


async def test_another_scopes_cancellation_passes_through() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    with anyio.CancelScope() as outer:
        lent = ServerCallScope(lambda: None, cancelled)
        with lent:
            outer.cancel()
            await anyio.lowlevel.checkpoint()
        pytest.fail("the lent scope stopped a cancellation it did not ask for")
    assert outer.cancelled_caught
    assert not lingers(lent)


async def test_a_group_stops_only_when_it_holds_nothing_but_cancellations() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    caught = await a_cancellation()
    lent = ServerCallScope(lambda: None, cancelled)
    only = BaseExceptionGroup("handler", [caught, caught])
    mixed = BaseExceptionGroup("handler", [caught, ValueError("boom")])
    assert not lent.__exit__(type(only), only, None)  # not cancelled yet: nothing is its own
    lent.cancel()
    assert lent.__exit__(type(only), only, None)
    assert not lent.__exit__(type(mixed), mixed, None)
    errors = ExceptionGroup("handler", [ValueError("boom")])
    assert not lent.__exit__(type(errors), errors, None)
    assert not lent.__exit__(ValueError, ValueError("boom"), None)
    assert not lent.__exit__(None, None, None)


async def test_only_a_cancelled_lent_scope_lingers() -> None:
    assert not lingers(ServerCallScope(lambda: None, BaseException))
    assert not lingers(anyio.CancelScope())
    assert not lingers(None)
