"""A live legacy session's own state, as one transition table: whether a GET listens on its standalone
stream, and whether it has ended.

    IDLE --listen--> LISTENING --unlisten--> IDLE
      |                  |
      +----- close ------+--> CLOSED

The session table (`states.SessionState`) says whether the session may be addressed; this table says
what its requests may still do. A session allows one standalone GET at a time (a second gets 409); a
request that reaches a session ended meanwhile (it awaited the event store, say) gets 404 like any
request to an unknown session. Each transition returns what the shell must do; anything not in the
table is a bug and raises.
"""

from __future__ import annotations

import enum
from typing import Final

from .states import TransitionTable

__all__: list[str] = []


class LiveState(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    CLOSED = "closed"

    # Members are singletons: identity hashing keeps a table lookup a C-level dict get.
    __hash__ = object.__hash__


class LiveInput(enum.Enum):
    EXCHANGE = "exchange"  # a POST is about to run a request on the session
    LISTEN = "listen"  # a GET wants the standalone stream
    UNLISTEN = "unlisten"  # that GET ended
    CLOSE = "close"  # the session ends (its table entry was removed)

    __hash__ = object.__hash__


class LiveAction(enum.Enum):
    NONE = "none"
    REFUSE_CONFLICT = "refuse_conflict"  # 409: one standalone stream per session
    REFUSE_GONE = "refuse_gone"  # 404: the session ended
    TEAR_DOWN = "tear_down"  # cancel its handlers, end its streams, forget its events

    __hash__ = object.__hash__


_S, _I, _A = LiveState, LiveInput, LiveAction

TRANSITIONS: Final = TransitionTable[LiveState, LiveInput, tuple[LiveState, LiveAction]](
    "session",
    {
        (_S.IDLE, _I.EXCHANGE): (_S.IDLE, _A.NONE),
        (_S.IDLE, _I.LISTEN): (_S.LISTENING, _A.NONE),
        (_S.IDLE, _I.CLOSE): (_S.CLOSED, _A.TEAR_DOWN),
        (_S.LISTENING, _I.EXCHANGE): (_S.LISTENING, _A.NONE),
        (_S.LISTENING, _I.LISTEN): (_S.LISTENING, _A.REFUSE_CONFLICT),
        (_S.LISTENING, _I.UNLISTEN): (_S.IDLE, _A.NONE),
        (_S.LISTENING, _I.CLOSE): (_S.CLOSED, _A.TEAR_DOWN),
        (_S.CLOSED, _I.EXCHANGE): (_S.CLOSED, _A.REFUSE_GONE),
        (_S.CLOSED, _I.LISTEN): (_S.CLOSED, _A.REFUSE_GONE),
        # The listening GET ends after its session did (the end closed its stream).
        (_S.CLOSED, _I.UNLISTEN): (_S.CLOSED, _A.NONE),
        (_S.CLOSED, _I.CLOSE): (_S.CLOSED, _A.NONE),
    },
)


def next_live_state(state: LiveState, event: LiveInput) -> tuple[LiveState, LiveAction]:
    return TRANSITIONS[(state, event)]
