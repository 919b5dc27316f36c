"""Authorization lifetime of live exchanges: nothing is written to a client past its token's end.

Each authenticated exchange (a POST being answered, a GET stream, a `subscriptions/listen` stream)
runs inside a `Hold`: a cancel scope registered under its credential, with the credential's expiry
as deadline, and a gate on `send` that refuses to write once the hold is over (a legacy handler runs
shielded from its connection, so the scope alone would not stop its writes). When a token is
removed, rotated out or expires, `revoke` cancels every hold of it at once, and the sessions it
opened are named so the app can end them.

Keys are token digests (tenant tokens) or None (a verified token, which ends only by its expiry).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel

from .._core.asgi import ClientGone, Send

__all__: list[str] = []


class Hold:
    """One exchange's authorization: a cancel scope, and the `send` that stops with it.

    The hold's cancellation never lands inside a send: a send cancelled midway leaves the server's
    keep-alive connection half-recycled (hypercorn on Trio), and the next request on it hangs. So
    while a send runs, the deadline is lifted and a cut waits for the send to return. Other
    cancellations (the client leaving, shutdown) reach a send as before.
    """

    __slots__ = ("_cut_pending", "_deadline", "_sending", "digest", "scope", "send")

    def __init__(self, send: Send, deadline: float, digest: bytes | None) -> None:
        self.digest = digest
        self._deadline = deadline
        self._sending = False
        self._cut_pending = False
        scope = self.scope = anyio.CancelScope(deadline=deadline)
        whole = False  # a JSON answer (its length declared) whose headers are out

        async def gated(message: Any) -> None:
            nonlocal whole
            if not whole and (scope.cancel_called or anyio.current_time() >= self._deadline):
                # Let the hold's cancellation end the exchange; a shielded writer (a legacy
                # handler's) is not reached by it, and takes this as its client gone.
                await anyio.lowlevel.checkpoint()
                raise ClientGone
            if message["type"] == "http.response.start":
                # A JSON answer whose headers are out is finished whole: its body follows at once,
                # holds only the answer, and truncated would only break the connection.
                whole = any(name == b"content-length" for name, _ in message.get("headers", ()))
            self._sending = True
            if self._deadline != math.inf:
                scope.deadline = math.inf
            try:
                await send(message)
            finally:
                self._sending = False
                if self._cut_pending and not whole:
                    scope.cancel()
                elif self._deadline != math.inf:
                    scope.deadline = self._deadline

        self.send: Send = gated

    def cut(self) -> None:
        """End the exchange now (after the send in progress, if any)."""
        if self._sending:
            self._cut_pending = True
        else:
            self.scope.cancel()

    def end_by(self, deadline: float) -> None:
        """End the exchange at `deadline` at the latest (loop clock)."""
        self._deadline = min(self._deadline, deadline)
        if not self._sending:
            self.scope.deadline = self._deadline

    @property
    def cut_caught(self) -> bool:
        """The exchange was ended because its token stopped working."""
        return self.scope.cancelled_caught

    @property
    def expired(self) -> bool:
        """Cut because its token's time ran out (not revoked)."""
        return self.cut_caught and anyio.current_time() >= self._deadline


class Grants:
    """Holds by tenant, and the token each session was last used with."""

    def __init__(self) -> None:
        self._holds: dict[str | None, set[Hold]] = {}
        # session id -> (tenant id, digest of the token that last used it)
        self._sessions: dict[str, tuple[str, bytes]] = {}

    @contextmanager
    def hold(
        self, tenant_id: str | None, digest: bytes | None, send: Send, deadline: float
    ) -> Generator[Hold, None, None]:
        """Run an exchange under its credential; `deadline` in the loop's clock (inf: none)."""
        held = Hold(send, deadline, digest)
        holds = self._holds.get(tenant_id)
        if holds is None:
            holds = self._holds[tenant_id] = set()
        holds.add(held)
        try:
            with held.scope:
                yield held
        finally:
            holds.discard(held)
            if not holds and self._holds.get(tenant_id) is holds:
                del self._holds[tenant_id]

    def revoke(self, tenant_id: str, digest: bytes | None, *, drain_until: float | None = None) -> list[str]:
        """A token stopped working (`digest`; None: every token of the tenant): cancel its exchanges
        now, or at `drain_until` (loop clock) for a removal the operator lets drain; returns the
        sessions it was last used on."""
        for held in list(self._holds.get(tenant_id, ())):
            if digest is None or held.digest == digest:
                if drain_until is None:
                    held.cut()
                else:
                    held.end_by(drain_until)
        sessions = [sid for sid, (tid, used) in self._sessions.items() if tid == tenant_id and digest in (None, used)]
        for session_id in sessions:
            del self._sessions[session_id]
        return sessions

    def opened_session(self, session_id: str, tenant_id: str, digest: bytes) -> None:
        """A session opened with this token: it ends with the token, unless another token of the
        same tenant uses it first (a client that switched tokens during a rotation)."""
        self._sessions[session_id] = (tenant_id, digest)

    def used_session(self, session_id: str, tenant_id: str, digest: bytes) -> None:
        bound = self._sessions.get(session_id)
        if bound is not None and bound[0] == tenant_id and bound[1] != digest:
            self._sessions[session_id] = (tenant_id, digest)

    def forget_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
