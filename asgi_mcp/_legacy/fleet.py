"""Legacy sessions shared by the workers of a fleet: the directory record, adoption, and the bus.

A session is recorded in the directory (`_ports.session_directory`) before its `initialize` answer
leaves. A worker that gets a request for a session it does not hold looks the record up and adopts
the session (`LegacyEndpoint`) when the caller's owner key matches exactly; several workers may then
hold a copy of one session, each with its own SDK connection rebuilt from the record.

What one copy does that another must see travels on the bus (`_ports.message_bus`), one channel per
tenant, addressed to the session inside it: the session's end (DELETE on any worker ends every
copy), a standalone message emitted where no GET listens, and a client's answer to a server-to-client
request that reached another worker than the one waiting for it. Every message carries its tenant
(the bus drops any other) and the session owner's digest, checked again on delivery: a worker never
hands one tenant's or principal's message to another's session.

With `max_sessions_per_tenant` and the fleet's session slots (`_ports.session_slots`), the cap holds
for the fleet: `initialize` reserves a slot before the SDK runs it; the slot is released when the
session ends for its client (DELETE on any worker, token removal, a failed initialize) and lapses
with the record when the session is only left behind (idle here, shutdown, a dead worker).

Nothing here runs on a request for a session its worker holds: a worker's own sessions cost no
round trip. A heartbeat moves the records (and slots) of busy sessions forward off the request path.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from typing import Any, Final, cast

import anyio
import anyio.abc

from .._core.errors import StoreUnavailable, SubscriptionCut, TooManyRequests
from .._core.session_table import SESSION_CAP_RETRY_AFTER, SessionEntry, SessionTable
from .._core.states import SessionState
from .._ports.fleet import FleetStores
from .._ports.message_bus import BusMessage
from .._ports.session_directory import SessionRecord
from .session import LegacySession

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.fleet")

CHANNEL: Final = "sessions"
# Ends that are this copy's own: the session lives on in the directory (and on other workers).
_LOCAL_ENDS: Final = frozenset({"idle_timeout", "shutdown", "ended_elsewhere", "deleted"})
RESUBSCRIBE_BACKOFF: Final = (0.1, 0.25, 0.5, 1.0)
# The bound on a request's waits in the fleet's stores when the bus does not say its own.
DEFAULT_TIMEOUT: Final = 1.5


class SessionFleet:
    """This worker's part in a fleet: records, lookups, and the per-tenant bus channels it listens to."""

    def __init__(
        self,
        stores: FleetStores,
        *,
        table: SessionTable[LegacySession],
        end_session: Callable[[str, str], bool],
        touch_interval: float,
    ) -> None:
        self.directory = stores.directory
        self.bus = stores.bus
        self.slots = stores.session_slots
        self._cap = table.max_per_tenant
        self._reserving: set[str] = set()  # opening sessions holding a slot, not yet joined
        self._secret = stores.secret
        self._table = table
        self._end_session = end_session
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._touch_interval = touch_interval
        self.worker_id = secrets.token_hex(4)
        self._listening: dict[str | None, anyio.Event] = {}
        self._lookups: dict[str, _Lookup] = {}  # directory lookups under way, by session id
        timeout = getattr(getattr(stores.bus, "connection", None), "timeout", None)
        self.timeout = float(timeout) if isinstance(timeout, (int, float)) else DEFAULT_TIMEOUT

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The fleet's own tasks (channels, heartbeat, ends announced), until `stop`."""
        with self._scope:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._heartbeat)
                task_status.started()
                await anyio.sleep_forever()

    def stop(self) -> None:
        self._scope.cancel()

    def _start(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(function, *args)

    # -- records ------------------------------------------------------------------------------------

    def owner_digest(self, owner: str) -> str:
        """What the directory and the bus carry instead of the owner key."""
        if self._secret is not None:
            return hmac.new(self._secret, owner.encode(), hashlib.sha256).hexdigest()
        return hashlib.sha256(b"asgi_mcp/owner\x00" + owner.encode()).hexdigest()

    def owns(self, record: SessionRecord, owner: str, tenant_id: str | None) -> bool:
        return record.tenant_id == tenant_id and hmac.compare_digest(record.owner, self.owner_digest(owner))

    async def record(self, entry: SessionEntry[LegacySession], params: dict[str, Any] | None) -> None:
        """Before the `initialize` answer leaves: the record any worker adopts the session from."""
        session = entry.value
        params = params or {}
        capabilities = params.get("capabilities")
        now = time.time()
        record = SessionRecord(
            session_id=entry.session_id,
            owner=self.owner_digest(entry.owner),
            tenant_id=entry.tenant_id,
            protocol_version=session.protocol_version,
            client_capabilities=cast("dict[str, Any]", capabilities) if isinstance(capabilities, dict) else {},
            initialize_params=params,
            created_at=now,
            last_seen=now,
            stream_tag=session.outbound.tag,
        )
        with self.bounded("session directory"):
            await self.listen(entry.tenant_id)
            await self.directory.record(record)

    @contextlib.asynccontextmanager
    async def adoption(self, session_id: str) -> AsyncGenerator[SessionRecord | None]:
        """The session's record while this request adopts it: one directory round trip for any number
        of concurrent adoptions of one session. The first asks and holds the others until its adoption
        ends (they then find the session held); a failed lookup fails them all (`StoreUnavailable`); a
        lookup cancelled (its client gone) leaves them to ask again. Waits are bounded (`bounded`)."""
        while (flight := self._lookups.get(session_id)) is not None:
            with self.bounded("session directory"):
                await flight.done.wait()
            if flight.failed:
                raise StoreUnavailable("session directory")
            if flight.answered:
                yield flight.record
                return
        flight = self._lookups[session_id] = _Lookup()
        try:
            try:
                with self.bounded("session directory"):
                    flight.record = await self.directory.lookup(session_id)
                flight.answered = True
            except Exception:
                flight.failed = True
                raise
            yield flight.record
        finally:  # however the adoption ends, no follower waits on, and no entry stays behind
            del self._lookups[session_id]
            flight.done.set()

    async def reserve(self, entry: SessionEntry[LegacySession]) -> None:
        """A slot for an opening session of a capped tenant, or 429 as the worker's own cap answers."""
        tenant_id = entry.tenant_id
        if self.slots is None or self._cap is None or tenant_id is None:
            return
        self._reserving.add(entry.session_id)
        with self.bounded("session slots"):
            reserved = await self.slots.reserve(tenant_id, entry.session_id, self._cap, time.time())
        if not reserved:
            self._reserving.discard(entry.session_id)
            raise TooManyRequests(SESSION_CAP_RETRY_AFTER, limit="sessions per tenant")

    def join(self, entry: SessionEntry[LegacySession]) -> None:
        """A session this worker now holds (opened or adopted): its copies reach each other."""
        self._reserving.discard(entry.session_id)
        session = entry.value
        session.dispatcher.id_prefix = f"w{self.worker_id}-"
        tenant_id, owner = entry.tenant_id, self.owner_digest(entry.owner)

        async def elsewhere(event_id: str | None, data: str) -> None:
            frame = {"k": "frame", "s": entry.session_id, "o": owner, "e": event_id, "d": data}
            # No GET here, and no worker reachable: dropped (logged by the bus); the handler goes on.
            with contextlib.suppress(StoreUnavailable):
                await self._publish(tenant_id, frame)

        session.outbound.elsewhere = elsewhere

    def ended(self, entry: SessionEntry[Any], reason: str, *, announced: bool) -> None:
        """A copy ended here (`LegacyEndpoint.end_session`): a session that ended for the client ends
        everywhere. Idle expiry and shutdown end this copy only (the record expires on its own).
        A session that never opened frees the slot it reserved."""
        if not announced:
            if entry.session_id in self._reserving:
                self._reserving.discard(entry.session_id)
                self._start(self._release_quietly, entry.tenant_id, entry.session_id)
        elif reason not in _LOCAL_ENDS:
            self._start(self._end_quietly, entry.session_id, entry.owner, entry.tenant_id)

    async def end_everywhere(self, session_id: str, owner: str, tenant_id: str | None) -> None:
        """Forget the record (no worker adopts it again) and free its slot, then tell the workers
        holding a copy."""
        await self.directory.forget(session_id)
        if self.slots is not None and self._cap is not None and tenant_id is not None:
            await self.slots.release(tenant_id, session_id)
        await self._publish(tenant_id, {"k": "end", "s": session_id, "o": self.owner_digest(owner)})

    async def forward_answer(self, entry: SessionEntry[LegacySession], raw: dict[str, Any]) -> None:
        """A client's answer no request here waits for: to the worker whose request it answers."""
        answer = {"id": raw.get("id"), "result": raw.get("result"), "error": raw.get("error")}
        message = {"k": "answer", "s": entry.session_id, "o": self.owner_digest(entry.owner), "a": answer}
        await self._publish(entry.tenant_id, message)

    async def _end_quietly(self, session_id: str, owner: str, tenant_id: str | None) -> None:
        with contextlib.suppress(StoreUnavailable):  # logged by the store; the record expires by its TTL
            await self.end_everywhere(session_id, owner, tenant_id)

    async def _release_quietly(self, tenant_id: str | None, session_id: str) -> None:
        if self.slots is not None and tenant_id is not None:
            with contextlib.suppress(StoreUnavailable):  # logged by the store; the slot lapses by its TTL
                await self.slots.release(tenant_id, session_id)

    async def _publish(self, tenant_id: str | None, message: dict[str, Any]) -> None:
        await self.bus.publish(tenant_id, CHANNEL, json.dumps(message, separators=(",", ":")))

    # -- the bus ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def bounded(self, what: str) -> Generator[None]:
        """What a request waits for in the fleet's stores, all of it, takes at most the stores' timeout:
        past it, `StoreUnavailable` (503 with Retry-After), never a hang."""
        with anyio.move_on_after(self.timeout) as scope:
            yield
        if scope.cancelled_caught:
            raise StoreUnavailable(what)

    async def listen(self, tenant_id: str | None) -> None:
        """Listen to the tenant's channel from now on (the first time: once the subscription holds).
        Callers bound the wait (`bounded`)."""
        ready = self._listening.get(tenant_id)
        if ready is None:
            ready = self._listening[tenant_id] = anyio.Event()
            self._start(self._follow, tenant_id, ready)
        await ready.wait()

    async def _follow(self, tenant_id: str | None, ready: anyio.Event) -> None:
        """The tenant's channel, for as long as this worker runs; resubscribed after a cut or an outage,
        then the sessions held here are checked against the directory (what was published meanwhile
        is lost: pub/sub is at most once, and a session deleted then must not live on here)."""
        failures = 0
        while True:
            try:
                async with self.bus.subscribe(tenant_id, CHANNEL) as feed:
                    if ready.is_set():
                        self._start(self._resync, tenant_id)
                    ready.set()
                    failures = 0
                    async for message in feed:
                        await self._route(tenant_id, message)
                return  # the bus closed: shutdown
            except (SubscriptionCut, StoreUnavailable, OSError, TimeoutError) as error:
                logger.warning("fleet channel lost (%s); subscribing again", type(error).__name__)
            except Exception:  # a bug here must not take the worker down: its own sessions go on
                logger.exception("fleet channel failed; subscribing again")
            await anyio.sleep(RESUBSCRIBE_BACKOFF[min(failures, len(RESUBSCRIBE_BACKOFF) - 1)])
            failures += 1

    async def _resync(self, tenant_id: str | None) -> None:
        held = [entry.session_id for entry in self._recorded() if entry.tenant_id == tenant_id]
        with contextlib.suppress(StoreUnavailable):  # logged by the store; the heartbeat checks again
            for session_id in held:
                if await self.directory.lookup(session_id) is None:
                    self._end_session(session_id, "ended_elsewhere")

    async def _route(self, tenant_id: str | None, message: BusMessage) -> None:
        try:
            fields: dict[str, Any] = json.loads(message.payload)
            session_id, owner, kind = fields["s"], fields["o"], fields["k"]
        except (ValueError, KeyError, TypeError):
            logger.warning("dropped a malformed fleet message")
            return
        entry = self._table.get(session_id) if isinstance(session_id, str) else None
        if entry is None:
            return  # not held here
        if entry.tenant_id != tenant_id or not hmac.compare_digest(str(owner), self.owner_digest(entry.owner)):
            logger.warning("dropped a fleet message addressed to another tenant or principal")
            return
        if kind == "end":
            self._end_session(session_id, "ended_elsewhere")
        elif kind == "answer":
            _resolve(entry.value, fields.get("a"))
        elif kind == "frame" and isinstance(fields.get("d"), str):
            await entry.value.outbound.deliver_standalone(fields.get("e"), fields["d"])

    # -- the heartbeat --------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Move the records of the sessions used here since the last beat forward, so they outlive
        their idle time on the worker that serves them; off every request's path. A record gone
        (deleted while this worker missed the bus, or expired) ends the copy held here."""
        since = anyio.current_time()
        while True:
            await anyio.sleep(self._touch_interval)
            now, wall = anyio.current_time(), time.time()
            busy = [e for e in self._recorded() if e.idle_since is None or e.idle_since >= since]
            since = now
            with contextlib.suppress(StoreUnavailable):  # logged by the store; the next beat tries again
                for entry in busy:
                    if not await self.directory.touch(entry.session_id, wall):
                        self._end_session(entry.session_id, "ended_elsewhere")  # deleted (or expired) meanwhile
                await self._renew_slots(busy, wall)

    def _recorded(self) -> list[SessionEntry[LegacySession]]:
        """The sessions held here that have a record: an opening one has none until its `initialize`
        answer is about to leave, and must not be taken for a session deleted meanwhile."""
        return [entry for entry in self._table if entry.state is not SessionState.OPENING]

    async def _renew_slots(self, busy: list[SessionEntry[LegacySession]], wall: float) -> None:
        """The slots of the sessions whose records were just renewed: they lapse together."""
        if self.slots is None or self._cap is None:
            return
        by_tenant: dict[str, list[str]] = {}
        for entry in busy:
            if entry.tenant_id is not None and self._table.get(entry.session_id) is entry:
                by_tenant.setdefault(entry.tenant_id, []).append(entry.session_id)
        for tenant_id, session_ids in by_tenant.items():
            await self.slots.renew(tenant_id, session_ids, wall)


class _Lookup:
    """One directory lookup that concurrent adoptions of a session share."""

    __slots__ = ("answered", "done", "failed", "record")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.record: SessionRecord | None = None
        self.answered = False
        self.failed = False


def _resolve(session: LegacySession, answer: object) -> None:
    """A client's answer forwarded by another worker, to the server-to-client request waiting here."""
    if not isinstance(answer, dict):
        return
    fields = cast("dict[str, Any]", answer)
    request_id, result, error = fields.get("id"), fields.get("result"), fields.get("error")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        return
    session.dispatcher.resolve(
        request_id,
        cast("dict[str, Any]", result) if isinstance(result, dict) else None,
        cast("dict[str, Any]", error) if isinstance(error, dict) else None,
    )
