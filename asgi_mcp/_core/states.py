"""Session lifecycle as one explicit transition table. Every state change of a session happens here.

    OPENING --initialized--> ACTIVE --drain--> DRAINING
       |                       |                  |
       +-------- close --------+------ close -----+--> CLOSED

A session is OPENING while its `initialize` request runs (it holds a slot against the session limit
but cannot be addressed), ACTIVE once that succeeds, DRAINING when its tenant was removed or updated
with the `drain` policy (it keeps serving until its deadline), and CLOSED for good. Anything not in
the table is a bug and raises.
"""

from __future__ import annotations

import enum
from typing import Final, Generic, TypeVar

__all__: list[str] = []


class SessionState(enum.Enum):
    OPENING = "opening"
    ACTIVE = "active"
    DRAINING = "draining"
    CLOSED = "closed"

    # Members are singletons: identity hashing keeps a lookup (`ADDRESSABLE`, per request) C-level.
    __hash__ = object.__hash__


class SessionInput(enum.Enum):
    INITIALIZED = "initialized"
    DRAIN = "drain"
    CLOSE = "close"

    __hash__ = object.__hash__


TRANSITIONS: Final[dict[tuple[SessionState, SessionInput], SessionState]] = {
    (SessionState.OPENING, SessionInput.INITIALIZED): SessionState.ACTIVE,
    (SessionState.OPENING, SessionInput.CLOSE): SessionState.CLOSED,
    (SessionState.ACTIVE, SessionInput.DRAIN): SessionState.DRAINING,
    (SessionState.ACTIVE, SessionInput.CLOSE): SessionState.CLOSED,
    (SessionState.DRAINING, SessionInput.DRAIN): SessionState.DRAINING,
    (SessionState.DRAINING, SessionInput.CLOSE): SessionState.CLOSED,
}

ADDRESSABLE: Final = frozenset({SessionState.ACTIVE, SessionState.DRAINING})


class InvalidTransition(RuntimeError):
    """A lifecycle input arrived in a state that cannot take it: a bug in asgi_mcp, never the client's fault."""


S = TypeVar("S")
I = TypeVar("I")  # noqa: E741 - the input, beside the state
V = TypeVar("V")


class TransitionTable(dict[tuple[S, I], V], Generic[S, I, V]):
    """A transition dict whose miss raises `InvalidTransition`: the shell indexes it inline on the
    request path (a C-level lookup, no Python call), and a pair missing from the table is still an error."""

    __slots__ = ("what",)

    def __init__(self, what: str, transitions: dict[tuple[S, I], V]) -> None:
        super().__init__(transitions)
        self.what = what

    def __missing__(self, key: tuple[S, I]) -> V:
        state, event = key
        raise InvalidTransition(
            f"{self.what} cannot take {getattr(event, 'value', event)!r} while {getattr(state, 'value', state)!r}"
        )


def next_state(state: SessionState, event: SessionInput) -> SessionState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"session cannot take {event.value!r} while {state.value!r}") from None
