"""The response table (`_core.response_states`): every (state, input) pair is either in the table or a
bug; a response ends once, and takes no frame after it stopped."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._core.response_states import (
    TRANSITIONS,
    ResponseAction,
    ResponseInput,
    ResponseState,
    next_response_state,
)
from asgi_mcp._core.states import InvalidTransition

S, E, A = ResponseState, ResponseInput, ResponseAction

EXPECTED = {
    (S.OPEN, E.WRITE): (S.OPEN, A.SEND),
    (S.OPEN, E.STOP): (S.STOPPED, A.NONE),
    (S.OPEN, E.FINISH): (S.STOPPED, A.SEND_FINAL),
    (S.OPEN, E.GONE): (S.ENDED, A.NONE),
    (S.STOPPED, E.WRITE): (S.STOPPED, A.REFUSE),
    (S.STOPPED, E.STOP): (S.STOPPED, A.NONE),
    (S.STOPPED, E.FINISH): (S.STOPPED, A.SEND_FINAL),
    (S.STOPPED, E.FINAL_SENT): (S.ENDED, A.NONE),
    (S.STOPPED, E.GONE): (S.ENDED, A.NONE),
    (S.ENDED, E.WRITE): (S.ENDED, A.REFUSE),
    (S.ENDED, E.STOP): (S.ENDED, A.NONE),
    (S.ENDED, E.FINISH): (S.ENDED, A.NONE),
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair(state: ResponseState, event: ResponseInput) -> None:
    if (state, event) in EXPECTED:
        assert next_response_state(state, event) == EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"{event.value!r} while {state.value!r}"):
            next_response_state(state, event)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@given(st.lists(st.sampled_from([E.WRITE, E.STOP, E.FINISH, E.GONE]), max_size=30))
def test_runs_of_a_response(events: list[ResponseInput]) -> None:
    """As the writer drives it (a send only on SEND or SEND_FINAL, which may fail: GONE): frames go out
    only before the first stop or finish, and the end of the body at most once."""
    state = S.OPEN
    finals = 0
    stopped = False
    for event in events:
        if state is S.ENDED and event is E.GONE:
            continue  # no send happens on an ended response, so none can fail
        state, action = next_response_state(state, event)
        if action is A.SEND:
            assert not stopped
        if event in (E.STOP, E.FINISH):
            stopped = True
        if action is A.SEND_FINAL:
            state, _ = next_response_state(state, E.FINAL_SENT)
            finals += 1
    assert finals <= 1
