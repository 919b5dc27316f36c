"""The session lifecycle table: every (state, input) pair is either in the table or a bug."""

from __future__ import annotations

import itertools

import pytest

from asgi_mcp._core.states import ADDRESSABLE, TRANSITIONS, InvalidTransition, SessionInput, SessionState, next_state

EXPECTED = {
    (SessionState.OPENING, SessionInput.INITIALIZED): SessionState.ACTIVE,
    (SessionState.OPENING, SessionInput.CLOSE): SessionState.CLOSED,
    (SessionState.ACTIVE, SessionInput.DRAIN): SessionState.DRAINING,
    (SessionState.ACTIVE, SessionInput.CLOSE): SessionState.CLOSED,
    (SessionState.DRAINING, SessionInput.DRAIN): SessionState.DRAINING,
    (SessionState.DRAINING, SessionInput.CLOSE): SessionState.CLOSED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(SessionState, SessionInput)))
def test_every_pair(state: SessionState, event: SessionInput) -> None:
    if (state, event) in EXPECTED:
        assert next_state(state, event) is EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=event.value):
            next_state(state, event)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


def test_closed_is_terminal() -> None:
    for event in SessionInput:
        with pytest.raises(InvalidTransition):
            next_state(SessionState.CLOSED, event)


def test_only_active_and_draining_are_addressable() -> None:
    assert frozenset({SessionState.ACTIVE, SessionState.DRAINING}) == ADDRESSABLE
