"""The requests in flight on a legacy session: each one's lifecycle as a transition table, and the
registry that holds them by client id, duplicates chained.

    ADMITTED --start--> RUNNING --returned | aborted--> SETTLED
       |                   |
       +-- peer_cancel ----+--> CANCELLED --(start) ... returned | aborted--> SETTLED
       +-- session_end ----+--> ENDED     --(start) ... returned | aborted--> SETTLED

An exchange is ADMITTED once registered (from then on the session's end cancels it), RUNNING while its
handler runs, CANCELLED when the client's `notifications/cancelled` reached it, ENDED when its session
ended under it, SETTLED once its answer is decided. Each transition returns what the shell must do:
cancel the handler's scope, or which answer to write. Anything not in the table is a bug and raises.

The client's id alone does not name an exchange: some clients send `"id": 1` on every request and pool one
session, so two calls with the same id may run at once. The registry keeps the newest live exchange per
id, chained to the older ones; a cancellation by client id reaches the newest, and the older ones stay
registered (the session's end still cancels them, and each becomes the newest again once the newer ones
settle).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

from .jsonrpc import RequestId
from .states import TransitionTable

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

__all__: list[str] = []


class ExchangeState(enum.Enum):
    ADMITTED = "admitted"
    RUNNING = "running"
    CANCELLED = "cancelled"
    ENDED = "ended"
    SETTLED = "settled"

    # Members are singletons: identity hashing keeps a table lookup a C-level dict get
    # (`Enum.__hash__` is a Python function, called twice per tuple key).
    __hash__ = object.__hash__


class ExchangeInput(enum.Enum):
    START = "start"  # the handler is about to run
    PEER_CANCEL = "peer_cancel"  # the client's notifications/cancelled names it
    SESSION_END = "session_end"  # its session ended (DELETE, expiry, tenant removal, shutdown)
    RETURNED = "returned"  # the handler produced an outcome (its result, or the error it raised)
    ABORTED = "aborted"  # the handler ended with no outcome (its scope was cancelled, or it never ran)

    __hash__ = object.__hash__


class ExchangeAction(enum.Enum):
    NONE = "none"
    CANCEL = "cancel"  # cancel the handler's scope (and, for a peer's cancellation, say so to it)
    ANSWER = "answer"  # write the handler's outcome
    ANSWER_CANCELLED = "answer_cancelled"  # write "Request cancelled" (-32800)
    ANSWER_CLOSED = "answer_closed"  # write "Session closed" (-32000)

    __hash__ = object.__hash__


_S, _I, _A = ExchangeState, ExchangeInput, ExchangeAction

TRANSITIONS: Final = TransitionTable[ExchangeState, ExchangeInput, tuple[ExchangeState, ExchangeAction]](
    "exchange",
    {
        (_S.ADMITTED, _I.START): (_S.RUNNING, _A.NONE),
        (_S.ADMITTED, _I.PEER_CANCEL): (_S.CANCELLED, _A.CANCEL),
        (_S.ADMITTED, _I.SESSION_END): (_S.ENDED, _A.CANCEL),
        (_S.RUNNING, _I.PEER_CANCEL): (_S.CANCELLED, _A.CANCEL),
        (_S.RUNNING, _I.SESSION_END): (_S.ENDED, _A.CANCEL),
        (_S.RUNNING, _I.RETURNED): (_S.SETTLED, _A.ANSWER),
        # Not cancelled by the peer nor by its session, yet no outcome: answered as cancelled, never silent.
        (_S.RUNNING, _I.ABORTED): (_S.SETTLED, _A.ANSWER_CANCELLED),
        # Cancelled while its SSE response was being opened: it starts with its scope already cancelled.
        (_S.CANCELLED, _I.START): (_S.CANCELLED, _A.NONE),
        (_S.CANCELLED, _I.PEER_CANCEL): (_S.CANCELLED, _A.NONE),
        (_S.CANCELLED, _I.SESSION_END): (_S.CANCELLED, _A.NONE),
        # The client asked to cancel it: that is the answer, even if the handler finished anyway.
        (_S.CANCELLED, _I.RETURNED): (_S.SETTLED, _A.ANSWER_CANCELLED),
        (_S.CANCELLED, _I.ABORTED): (_S.SETTLED, _A.ANSWER_CANCELLED),
        (_S.ENDED, _I.START): (_S.ENDED, _A.NONE),
        (_S.ENDED, _I.PEER_CANCEL): (_S.ENDED, _A.NONE),
        (_S.ENDED, _I.SESSION_END): (_S.ENDED, _A.NONE),
        # A handler that finished despite its session's end keeps its outcome (nobody may read it).
        (_S.ENDED, _I.RETURNED): (_S.SETTLED, _A.ANSWER),
        (_S.ENDED, _I.ABORTED): (_S.SETTLED, _A.ANSWER_CLOSED),
    },
)


def next_exchange_state(state: ExchangeState, event: ExchangeInput) -> tuple[ExchangeState, ExchangeAction]:
    return TRANSITIONS[(state, event)]


class Exchange(Protocol):
    """What the registry needs of the shell's per-request object (its own slots, no extra allocation)."""

    state: ExchangeState
    client_key: RequestId
    # The older live exchange with the same client id, if any: a chain per id, newest first.
    shadowed: Self | None


E = TypeVar("E", bound=Exchange)


def advance(exchange: Exchange, event: ExchangeInput) -> ExchangeAction:
    """Apply `event` to `exchange`; returns what the shell must do."""
    exchange.state, action = next_exchange_state(exchange.state, event)
    return action


def client_key(request_id: RequestId) -> RequestId:
    """The client's id as the protocol correlates it: `"7"` and `7` name the same request
    (exactly as `mcp.shared.dispatcher.coerce_request_id`)."""
    if isinstance(request_id, str):
        try:
            return int(request_id)
        except ValueError:
            pass
    return request_id


class InFlight(Generic[E]):
    """The exchanges of one session that are admitted and not yet released: per client id, the newest
    one, which chains to the older live ones with the same id (duplicates only). An exchange is known by
    its identity, so two with the same client id never mix; one dict entry per live id is all the
    per-request bookkeeping."""

    __slots__ = ("_newest",)

    def __init__(self) -> None:
        self._newest: dict[RequestId, E] = {}

    def __len__(self) -> int:
        return sum(1 for _ in self._live())

    def __iter__(self) -> Iterator[E]:
        return iter(list(self._live()))

    def _live(self) -> Iterator[E]:
        for exchange in self._newest.values():
            live: E | None = exchange
            while live is not None:
                yield live
                live = live.shadowed

    def admit(self, exchange: E, request_id: RequestId) -> None:
        """Register `exchange` (in state ADMITTED) for the client's `request_id`."""
        # Most ids are ints, which are their own key: no call for them on the per-request path.
        key = exchange.client_key = client_key(request_id) if isinstance(request_id, str) else request_id
        newest = self._newest
        exchange.shadowed = newest.get(key)
        newest[key] = exchange

    def newest(self, request_id: RequestId) -> E | None:
        """The newest live exchange the client's `request_id` names (what a cancellation reaches)."""
        return self._newest.get(client_key(request_id))

    def release(self, exchange: E) -> None:
        """The exchange's handler is done: take it out. Idempotent."""
        key = exchange.client_key
        newer = self._newest.get(key)
        shadowed = exchange.shadowed
        if newer is exchange:
            if shadowed is None:
                del self._newest[key]
            else:
                self._newest[key] = shadowed
                exchange.shadowed = None
            return
        # Not the newest with its id (duplicate ids only): unlink it from the chain, if still in it.
        while newer is not None:
            if newer.shadowed is exchange:
                newer.shadowed = shadowed
                exchange.shadowed = None
                return
            newer = newer.shadowed
