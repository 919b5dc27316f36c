"""A live legacy session's own table (`_core.live_session`): every (state, input) pair is either in the
table or a bug; one standalone GET at a time; nothing runs on a closed session."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._core.live_session import TRANSITIONS, LiveAction, LiveInput, LiveState, next_live_state
from asgi_mcp._core.states import InvalidTransition

S, E, A = LiveState, LiveInput, LiveAction

EXPECTED = {
    (S.IDLE, E.EXCHANGE): (S.IDLE, A.NONE),
    (S.IDLE, E.LISTEN): (S.LISTENING, A.NONE),
    (S.IDLE, E.CLOSE): (S.CLOSED, A.TEAR_DOWN),
    (S.LISTENING, E.EXCHANGE): (S.LISTENING, A.NONE),
    (S.LISTENING, E.LISTEN): (S.LISTENING, A.REFUSE_CONFLICT),
    (S.LISTENING, E.UNLISTEN): (S.IDLE, A.NONE),
    (S.LISTENING, E.CLOSE): (S.CLOSED, A.TEAR_DOWN),
    (S.CLOSED, E.EXCHANGE): (S.CLOSED, A.REFUSE_GONE),
    (S.CLOSED, E.LISTEN): (S.CLOSED, A.REFUSE_GONE),
    (S.CLOSED, E.UNLISTEN): (S.CLOSED, A.NONE),
    (S.CLOSED, E.CLOSE): (S.CLOSED, A.NONE),
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair(state: LiveState, event: LiveInput) -> None:
    if (state, event) in EXPECTED:
        assert next_live_state(state, event) == EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"{event.value!r} while {state.value!r}"):
            next_live_state(state, event)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@given(st.lists(st.sampled_from([E.EXCHANGE, E.LISTEN, E.CLOSE]), max_size=30))
def test_runs_of_a_session(events: list[LiveInput]) -> None:
    """GETs come and go (a refused one never unlistens): the teardown happens exactly once, at the first
    close; at most one GET listens; after the close everything is refused as gone."""
    state = S.IDLE
    teardowns = 0
    listening = 0
    for event in events:
        state, action = next_live_state(state, event)
        if action is A.TEAR_DOWN:
            teardowns += 1
        if event is E.LISTEN and action is A.NONE:
            listening += 1
            assert listening == 1
            state, _ = next_live_state(state, E.UNLISTEN)  # that GET ends
            listening -= 1
        if teardowns:
            assert state is S.CLOSED
            assert action in (A.NONE, A.TEAR_DOWN, A.REFUSE_GONE)
            assert event is E.CLOSE or action is A.REFUSE_GONE
    assert teardowns == (1 if E.CLOSE in events else 0)
