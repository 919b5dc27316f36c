"""The outbound stream table (`_core.outbound`): every (state, input) pair is either in the table or a
bug, and any run of a stream ends it at most once, never attached after it ended."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._core.outbound import TRANSITIONS, StreamAction, StreamInput, StreamState, next_stream_state
from asgi_mcp._core.states import InvalidTransition

S, E, A = StreamState, StreamInput, StreamAction

EXPECTED = {
    (S.AWAITING, E.MESSAGE): (S.AWAITING, A.DROP),
    (S.AWAITING, E.FINAL): (S.ANSWERED, A.RECORD),
    (S.DETACHED, E.WRITE_TO): (S.DIRECT, A.NONE),
    (S.DETACHED, E.ATTACH): (S.BUFFERED, A.NONE),
    (S.DETACHED, E.DETACH): (S.DETACHED, A.NONE),
    (S.DETACHED, E.MESSAGE): (S.DETACHED, A.DELIVER),
    (S.DETACHED, E.FINAL): (S.ENDED, A.DELIVER),
    (S.DETACHED, E.CLOSE): (S.ENDED, A.NONE),
    (S.DIRECT, E.ATTACH): (S.BUFFERED, A.RELEASE),
    (S.DIRECT, E.DETACH): (S.DETACHED, A.RELEASE),
    (S.DIRECT, E.LOST): (S.DETACHED, A.NONE),
    (S.DIRECT, E.MESSAGE): (S.DIRECT, A.DELIVER),
    (S.DIRECT, E.FINAL): (S.ENDED, A.DELIVER),
    (S.DIRECT, E.CLOSE): (S.ENDED, A.RELEASE),
    (S.BUFFERED, E.ATTACH): (S.BUFFERED, A.RELEASE),
    (S.BUFFERED, E.DETACH): (S.DETACHED, A.RELEASE),
    (S.BUFFERED, E.LOST): (S.DETACHED, A.RELEASE),
    (S.BUFFERED, E.MESSAGE): (S.BUFFERED, A.DELIVER),
    (S.BUFFERED, E.FINAL): (S.ENDED, A.DELIVER),
    (S.BUFFERED, E.CLOSE): (S.ENDED, A.RELEASE),
    (S.ENDED, E.ATTACH): (S.ENDED, A.REFUSE),
    (S.ENDED, E.DETACH): (S.ENDED, A.RELEASE),
    (S.ENDED, E.LOST): (S.ENDED, A.RELEASE),
    (S.ENDED, E.CLOSE): (S.ENDED, A.RELEASE),
    (S.ENDED, E.MESSAGE): (S.ENDED, A.DROP),
    (S.ENDED, E.FINAL): (S.ENDED, A.DROP),
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair(state: StreamState, event: StreamInput) -> None:
    if (state, event) in EXPECTED:
        assert next_stream_state(state, event) == EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"{event.value!r} while {state.value!r}"):
            next_stream_state(state, event)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


def test_a_json_answer_takes_only_messages_and_its_answer() -> None:
    for event in E:
        allowed = event in (E.MESSAGE, E.FINAL)
        assert ((S.AWAITING, event) in TRANSITIONS) is allowed
    assert not any(state is S.ANSWERED for state, _ in TRANSITIONS)  # nothing after the answer


# What a live stream may be sent while the session runs (WRITE_TO only on a fresh stream).
LIVE_INPUTS = [E.ATTACH, E.DETACH, E.LOST, E.MESSAGE, E.FINAL, E.CLOSE]


@given(st.lists(st.sampled_from(LIVE_INPUTS), max_size=40), st.booleans())
def test_runs_of_a_stream(events: list[StreamInput], posted: bool) -> None:
    """Any run from a fresh stream (written to by its POST or not): a miss is only a LOST with nothing
    attached (the shell never sends one); messages are delivered exactly until the stream ends; once
    ended it stays ended and refuses every reconnection."""
    state = S.DETACHED
    if posted:
        state, _ = next_stream_state(state, E.WRITE_TO)
    ended = False
    for event in events:
        if (state, event) not in TRANSITIONS:
            assert (state, event) == (S.DETACHED, E.LOST)
            continue
        before = state
        state, action = next_stream_state(state, event)
        if ended:
            assert state is S.ENDED
            assert action in ((A.REFUSE,) if event is E.ATTACH else (A.DROP, A.RELEASE))
            continue
        if event in (E.MESSAGE, E.FINAL):
            assert action is A.DELIVER
        if event in (E.FINAL, E.CLOSE):
            ended = True
            assert state is S.ENDED
        # A connection is let go of exactly when one was attached and is being replaced or dropped.
        if action is A.RELEASE:
            assert before in (S.DIRECT, S.BUFFERED)
