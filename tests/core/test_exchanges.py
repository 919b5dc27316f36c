"""The exchange table and the in-flight registry (`_core.exchanges`): every (state, input) pair is either
in the table or a bug, and the registry tells requests apart by identity while cancellations by the
client's id reach the newest live one."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._core.exchanges import (
    TRANSITIONS,
    ExchangeAction,
    ExchangeInput,
    ExchangeState,
    InFlight,
    advance,
    client_key,
    next_exchange_state,
)
from asgi_mcp._core.jsonrpc import RequestId
from asgi_mcp._core.states import InvalidTransition

S, E, A = ExchangeState, ExchangeInput, ExchangeAction

EXPECTED = {
    (S.ADMITTED, E.START): (S.RUNNING, A.NONE),
    (S.ADMITTED, E.PEER_CANCEL): (S.CANCELLED, A.CANCEL),
    (S.ADMITTED, E.SESSION_END): (S.ENDED, A.CANCEL),
    (S.RUNNING, E.PEER_CANCEL): (S.CANCELLED, A.CANCEL),
    (S.RUNNING, E.SESSION_END): (S.ENDED, A.CANCEL),
    (S.RUNNING, E.RETURNED): (S.SETTLED, A.ANSWER),
    (S.RUNNING, E.ABORTED): (S.SETTLED, A.ANSWER_CANCELLED),
    (S.CANCELLED, E.START): (S.CANCELLED, A.NONE),
    (S.CANCELLED, E.PEER_CANCEL): (S.CANCELLED, A.NONE),
    (S.CANCELLED, E.SESSION_END): (S.CANCELLED, A.NONE),
    (S.CANCELLED, E.RETURNED): (S.SETTLED, A.ANSWER_CANCELLED),
    (S.CANCELLED, E.ABORTED): (S.SETTLED, A.ANSWER_CANCELLED),
    (S.ENDED, E.START): (S.ENDED, A.NONE),
    (S.ENDED, E.PEER_CANCEL): (S.ENDED, A.NONE),
    (S.ENDED, E.SESSION_END): (S.ENDED, A.NONE),
    (S.ENDED, E.RETURNED): (S.SETTLED, A.ANSWER),
    (S.ENDED, E.ABORTED): (S.SETTLED, A.ANSWER_CLOSED),
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair(state: ExchangeState, event: ExchangeInput) -> None:
    if (state, event) in EXPECTED:
        assert next_exchange_state(state, event) == EXPECTED[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"{event.value!r} while {state.value!r}"):
            next_exchange_state(state, event)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


def test_settled_is_terminal_and_nothing_is_admitted_twice() -> None:
    for event in E:
        with pytest.raises(InvalidTransition):
            next_exchange_state(S.SETTLED, event)
    assert all(target is not S.ADMITTED for target, _ in TRANSITIONS.values())


@given(st.lists(st.sampled_from([E.START, E.PEER_CANCEL, E.SESSION_END])), st.sampled_from([E.RETURNED, E.ABORTED]))
def test_every_run_settles_once_with_one_answer(events: list[ExchangeInput], last: ExchangeInput) -> None:
    """Whatever arrives before the handler ends (a START only once, first), the exchange settles with an
    answer: the client's cancellation wins, then the session's end, then the handler's outcome."""
    record = _Record()
    started = False
    for event in events:
        if event is E.START:
            if started:
                continue
            started = True
        advance(record, event)
    if not started:
        advance(record, E.START)
    cancelled = E.PEER_CANCEL in events and (
        E.SESSION_END not in events or _first(events, E.PEER_CANCEL, E.SESSION_END)
    )
    ended = E.SESSION_END in events and not cancelled
    action = advance(record, last)
    assert record.state is S.SETTLED
    if cancelled:
        assert action is A.ANSWER_CANCELLED
    elif ended:
        assert action is (A.ANSWER if last is E.RETURNED else A.ANSWER_CLOSED)
    else:
        assert action is (A.ANSWER if last is E.RETURNED else A.ANSWER_CANCELLED)
    with pytest.raises(InvalidTransition):
        advance(record, last)


def _first(events: list[ExchangeInput], a: ExchangeInput, b: ExchangeInput) -> bool:
    return events.index(a) < events.index(b)


@dataclass(eq=False)
class _Record:
    state: ExchangeState = S.ADMITTED
    client_key: RequestId = 0
    shadowed: _Record | None = None


def test_client_key_correlates_as_the_sdk_does() -> None:
    assert client_key("7") == 7 == client_key(7)
    assert client_key("a") == "a"
    assert client_key(" 7 ") == 7  # int() is lenient; so is the SDK's coerce_request_id


def test_duplicate_ids_stay_distinct_and_the_newest_is_cancelled() -> None:
    in_flight: InFlight[_Record] = InFlight()
    older, newer = _Record(), _Record()
    in_flight.admit(older, 1)
    in_flight.admit(newer, "1")
    assert set(in_flight) == {older, newer}
    assert len(in_flight) == 2
    assert in_flight.newest(1) is newer
    in_flight.release(newer)
    assert in_flight.newest("1") is older  # once the newest is done, the older one is reachable again
    in_flight.release(older)
    in_flight.release(older)  # idempotent
    assert in_flight.newest(1) is None
    assert len(in_flight) == 0


def test_releasing_an_older_duplicate_keeps_the_newer_ones_chained() -> None:
    in_flight: InFlight[_Record] = InFlight()
    records = [_Record() for _ in range(3)]
    for record in records:
        in_flight.admit(record, 1)
    in_flight.release(records[1])
    assert in_flight.newest(1) is records[2]
    in_flight.release(records[2])
    assert in_flight.newest(1) is records[0]
    assert set(in_flight) == {records[0]}


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 20)), max_size=60))
def test_registry_matches_a_model(operations: list[tuple[bool, int, int]]) -> None:
    """Admit and release in any order: `newest` is always the most recently admitted live record with
    that id, and iteration yields exactly the live records."""
    in_flight: InFlight[_Record] = InFlight()
    live: list[tuple[int, _Record]] = []  # in admission order
    for admit, request_id, pick in operations:
        if admit or not live:
            record = _Record()
            in_flight.admit(record, request_id)
            live.append((request_id, record))
        else:
            _, record = live.pop(pick % len(live))
            in_flight.release(record)
            in_flight.release(record)  # idempotent, whatever else is live with its id
        for key in range(4):
            same = [record for rid, record in live if rid == key]
            assert in_flight.newest(key) is (same[-1] if same else None)
        assert set(in_flight) == {record for _, record in live}
        assert len(in_flight) == len(live)
