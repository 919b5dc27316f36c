"""An outbound stream of a legacy session (a POST's answer stream, or the standalone stream) as one
transition table.

    DETACHED <--write_to / attach / detach / lost--> DIRECT | BUFFERED
        |                                               |
        +------------------- final | close -------------+--> ENDED
    AWAITING --final--> ANSWERED                       (a JSON answer: no connection, nothing stored)

A logical stream outlives its HTTP connections: DIRECT while it writes straight to the response of the
POST that runs its request, BUFFERED while a GET (the standalone stream, or a reconnection with
`Last-Event-ID`) reads it through a buffer, DETACHED between connections (its messages still reach the
event store), ENDED once its final message was emitted or its session ended. An ENDED stream may still
hold the connection its final message is being delivered on, which the session's end must release.
Each transition returns what the shell must do; anything not in the table is a bug and raises.
"""

from __future__ import annotations

import enum
from typing import Final

from .states import TransitionTable

__all__: list[str] = []


class StreamState(enum.Enum):
    AWAITING = "awaiting"  # a JSON answer's stream, before its answer
    ANSWERED = "answered"  # a JSON answer's stream, its answer recorded
    DETACHED = "detached"
    DIRECT = "direct"
    BUFFERED = "buffered"
    ENDED = "ended"

    # Members are singletons: identity hashing keeps a table lookup a C-level dict get.
    __hash__ = object.__hash__


class StreamInput(enum.Enum):
    WRITE_TO = "write_to"  # the POST running the request writes its frames straight to its response
    ATTACH = "attach"  # a GET attaches (through a buffer), replacing any connection
    DETACH = "detach"  # stop feeding the connection (SEP-1699 polling close, a GET that ended)
    LOST = "lost"  # the connection went away on its own (a failed write, a closed buffer)
    MESSAGE = "message"  # a message that is not the stream's last
    FINAL = "final"  # the stream's last message (its request's answer)
    CLOSE = "close"  # the session ended

    __hash__ = object.__hash__


class StreamAction(enum.Enum):
    NONE = "none"
    RELEASE = "release"  # let go of the attached connection (stop the writer, close the buffer)
    DELIVER = "deliver"  # store the message (for replay), then deliver it to the connection, if any
    DROP = "drop"  # nothing to store or deliver it to
    RECORD = "record"  # keep the answer for the request that runs it
    REFUSE = "refuse"  # the stream ended: a reconnection gets its replay only

    __hash__ = object.__hash__


_S, _I, _A = StreamState, StreamInput, StreamAction

TRANSITIONS: Final = TransitionTable[StreamState, StreamInput, tuple[StreamState, StreamAction]](
    "stream",
    {
        # A JSON answer carries only its final message; request-scoped notifications have nowhere to go.
        (_S.AWAITING, _I.MESSAGE): (_S.AWAITING, _A.DROP),
        (_S.AWAITING, _I.FINAL): (_S.ANSWERED, _A.RECORD),
        (_S.DETACHED, _I.WRITE_TO): (_S.DIRECT, _A.NONE),
        (_S.DETACHED, _I.ATTACH): (_S.BUFFERED, _A.NONE),
        (_S.DETACHED, _I.DETACH): (_S.DETACHED, _A.NONE),
        (_S.DETACHED, _I.MESSAGE): (_S.DETACHED, _A.DELIVER),
        (_S.DETACHED, _I.FINAL): (_S.ENDED, _A.DELIVER),
        (_S.DETACHED, _I.CLOSE): (_S.ENDED, _A.NONE),
        # A reconnection takes the stream over from the POST's response.
        (_S.DIRECT, _I.ATTACH): (_S.BUFFERED, _A.RELEASE),
        (_S.DIRECT, _I.DETACH): (_S.DETACHED, _A.RELEASE),
        (_S.DIRECT, _I.LOST): (_S.DETACHED, _A.NONE),
        (_S.DIRECT, _I.MESSAGE): (_S.DIRECT, _A.DELIVER),
        (_S.DIRECT, _I.FINAL): (_S.ENDED, _A.DELIVER),
        (_S.DIRECT, _I.CLOSE): (_S.ENDED, _A.RELEASE),
        # A newer reconnection replaces the older one (its client left it).
        (_S.BUFFERED, _I.ATTACH): (_S.BUFFERED, _A.RELEASE),
        (_S.BUFFERED, _I.DETACH): (_S.DETACHED, _A.RELEASE),
        (_S.BUFFERED, _I.LOST): (_S.DETACHED, _A.RELEASE),
        (_S.BUFFERED, _I.MESSAGE): (_S.BUFFERED, _A.DELIVER),
        (_S.BUFFERED, _I.FINAL): (_S.ENDED, _A.DELIVER),
        (_S.BUFFERED, _I.CLOSE): (_S.ENDED, _A.RELEASE),
        (_S.ENDED, _I.ATTACH): (_S.ENDED, _A.REFUSE),
        # The connection the final message went out on, or the one it was being delivered on.
        (_S.ENDED, _I.DETACH): (_S.ENDED, _A.RELEASE),
        (_S.ENDED, _I.LOST): (_S.ENDED, _A.RELEASE),
        (_S.ENDED, _I.CLOSE): (_S.ENDED, _A.RELEASE),
        # Late messages of an ended stream (its session ended under the request): nobody can read them.
        (_S.ENDED, _I.MESSAGE): (_S.ENDED, _A.DROP),
        (_S.ENDED, _I.FINAL): (_S.ENDED, _A.DROP),
    },
)


def next_stream_state(state: StreamState, event: StreamInput) -> tuple[StreamState, StreamAction]:
    return TRANSITIONS[(state, event)]
