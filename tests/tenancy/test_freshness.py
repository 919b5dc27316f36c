"""The local copy's freshness as a state table: each change once, a missing transition is a bug."""

from __future__ import annotations

import logging

import pytest

from asgi_mcp import StoreUnavailable
from asgi_mcp._core.states import InvalidTransition
from asgi_mcp._tenancy.freshness import TRANSITIONS, Freshness, LocalCopy, StoreEvent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lost_then_expired_then_resynced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "asgi_mcp.tenants")
    clock = Clock()
    copy = LocalCopy(10.0, clock)
    assert not copy.degraded
    copy.lost()
    copy.lost()  # the mirror's retries: still one transition
    assert copy.degraded
    clock.now += 9.9
    copy.check()  # served locally
    clock.now += 0.1
    for _ in range(2):
        with pytest.raises(StoreUnavailable) as refused:
            copy.check()
        assert refused.value.status == 503
    copy.lost()
    assert copy.state is Freshness.FAILING_CLOSED
    copy.resynced()
    copy.resynced()
    assert copy.state is Freshness.CURRENT
    assert not copy.degraded
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "tenant store unreachable",
        "tenant store unreachable for over 10 s",
        "tenant store reachable again",
    ]


def test_a_copy_lost_again_counts_from_the_new_loss() -> None:
    clock = Clock()
    copy = LocalCopy(10.0, clock)
    copy.lost()
    clock.now += 8
    copy.resynced()
    copy.lost()
    clock.now += 8
    copy.check()  # 8 s into this loss, not 16


def test_zero_fails_closed_at_once_and_none_never() -> None:
    at_once, never = LocalCopy(0.0, Clock()), LocalCopy(None, Clock())
    at_once.lost()
    never.lost()
    with pytest.raises(StoreUnavailable):
        at_once.check()
    never.check()
    assert never.state is Freshness.LOCAL_COPY


def test_a_transition_not_in_the_table_is_an_error() -> None:
    with pytest.raises(InvalidTransition, match="cannot take 'expired' while 'current'"):
        TRANSITIONS[(Freshness.CURRENT, StoreEvent.EXPIRED)]
    with pytest.raises(ValueError, match="stale_for"):
        LocalCopy(-1.0, Clock())
