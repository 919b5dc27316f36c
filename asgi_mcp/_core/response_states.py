"""An SSE response written by the task that runs its request, as one transition table (both eras).

    OPEN --stop | finish--> STOPPED --final_sent | gone--> ENDED
      |                                                      ^
      +------------------------- gone -----------------------+

OPEN while it takes frames; STOPPED once no frame may join it (its stream let go of it, or its task is
about to send the end of the body); ENDED once the end of the body went out or the client left (a send
failed or made no progress). Each transition returns what the shell must do; anything not in the table
is a bug and raises. Turn-taking and keep-alive accounting are not lifecycle: they stay in the writer.
"""

from __future__ import annotations

import enum
from typing import Final

from .states import TransitionTable

__all__: list[str] = []


class ResponseState(enum.Enum):
    OPEN = "open"
    STOPPED = "stopped"
    ENDED = "ended"

    # Members are singletons: identity hashing keeps a table lookup a C-level dict get.
    __hash__ = object.__hash__


class ResponseInput(enum.Enum):
    WRITE = "write"  # a frame (or keep-alive comment) wants to go out
    STOP = "stop"  # no more frames
    FINISH = "finish"  # the request's task ends the response
    FINAL_SENT = "final_sent"  # the end of the body went out
    GONE = "gone"  # a send failed or was abandoned: the client left

    __hash__ = object.__hash__


class ResponseAction(enum.Enum):
    NONE = "none"
    SEND = "send"  # send the frame
    REFUSE = "refuse"  # drop the frame: the response takes no more
    SEND_FINAL = "send_final"  # send the end of the body (once the current send is over)

    __hash__ = object.__hash__


_S, _I, _A = ResponseState, ResponseInput, ResponseAction

TRANSITIONS: Final = TransitionTable[ResponseState, ResponseInput, tuple[ResponseState, ResponseAction]](
    "response",
    {
        (_S.OPEN, _I.WRITE): (_S.OPEN, _A.SEND),
        (_S.OPEN, _I.STOP): (_S.STOPPED, _A.NONE),
        (_S.OPEN, _I.FINISH): (_S.STOPPED, _A.SEND_FINAL),
        (_S.OPEN, _I.GONE): (_S.ENDED, _A.NONE),
        (_S.STOPPED, _I.WRITE): (_S.STOPPED, _A.REFUSE),
        (_S.STOPPED, _I.STOP): (_S.STOPPED, _A.NONE),
        (_S.STOPPED, _I.FINISH): (_S.STOPPED, _A.SEND_FINAL),
        (_S.STOPPED, _I.FINAL_SENT): (_S.ENDED, _A.NONE),
        (_S.STOPPED, _I.GONE): (_S.ENDED, _A.NONE),
        (_S.ENDED, _I.WRITE): (_S.ENDED, _A.REFUSE),
        (_S.ENDED, _I.STOP): (_S.ENDED, _A.NONE),
        (_S.ENDED, _I.FINISH): (_S.ENDED, _A.NONE),
    },
)


def next_response_state(state: ResponseState, event: ResponseInput) -> tuple[ResponseState, ResponseAction]:
    return TRANSITIONS[(state, event)]
