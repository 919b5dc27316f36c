"""Property tests of the sans-IO core: no event loop, no clock, no sockets.

What `core/test_sse.py`, `core/test_http.py`, `core/test_jsonrpc.py`, `ports/test_replay.py`,
`core/test_session_table.py` and `core/test_states.py` check by example is checked here for every input Hypothesis can
find, each against an independent oracle written from the spec (RFC 9110 for Accept, JSON-RPC 2.0, WHATWG SSE through
`tests.kit.sse`), plus a synchronous model-based test of `SessionTable` under explicit `now` values.
"""

from __future__ import annotations

import json
import string
import sys
from collections import Counter
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from asgi_mcp import Headers, InMemoryEventStore, ProtocolError
from asgi_mcp._auth.bearer import parse_bearer
from asgi_mcp._core.errors import INVALID_REQUEST, PARSE_ERROR, SERVER_BUSY, UNSUPPORTED_PROTOCOL_VERSION
from asgi_mcp._core.http import (
    DEFAULT_LEGACY_VERSION,
    LEGACY_VERSIONS,
    MODERN_VERSIONS,
    accepts,
    endpoint_matches,
    era_of,
    normalize_endpoint,
)
from asgi_mcp._core.jsonrpc import dumps, parse_body
from asgi_mcp._core.session_table import SessionEntry, SessionTable
from asgi_mcp._core.sse import KEEPALIVE, encode_event
from asgi_mcp._core.states import (
    ADDRESSABLE,
    TRANSITIONS,
    InvalidTransition,
    SessionInput,
    SessionState,
    next_state,
)
from asgi_mcp._ports.replay import EventLog
from tests.kit.sse import SSEDecoder

# -- SSE framing (extends core/test_sse.py: mixed priming/retry/keep-alive streams, id validation) ------

single_line = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n"))
ids = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n\0"))


@st.composite
def sse_items(draw: st.DrawFn) -> tuple[str, str | None, str | None, int | None]:
    """One event as the transport writes it: a message, or a priming event (empty data, id, retry)."""
    if draw(st.booleans()):
        return "", None, draw(ids), draw(st.one_of(st.none(), st.integers(0, 10**6)))
    event = draw(st.one_of(st.none(), single_line.filter(bool)))
    return draw(st.text()), event, draw(st.one_of(st.none(), ids)), draw(st.one_of(st.none(), st.integers(0, 10**6)))


@given(st.lists(st.tuples(sse_items(), st.booleans()), min_size=1, max_size=8), st.data())
def test_sse_stream_of_mixed_events_decodes_from_any_chunking(
    items: list[tuple[tuple[str, str | None, str | None, int | None], bool]], data: st.DataObject
) -> None:
    payload = b"".join(
        (KEEPALIVE if keepalive else b"") + encode_event(text, event=event, event_id=event_id, retry_ms=retry)
        for (text, event, event_id, retry), keepalive in items
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=8)))
    decoder, events, previous = SSEDecoder(), [], 0
    for cut in [*cuts, len(payload)]:
        events.extend(decoder.feed(payload[previous:cut]))
        previous = cut
    # Every event is dispatched (a priming event's one empty data line counts), in order, intact.
    assert len(events) == len(items)
    last_id: str | None = None
    for decoded, ((text, event, event_id, retry), _) in zip(events, items, strict=True):
        last_id = event_id if event_id is not None else last_id
        assert decoded.data == text.replace("\r\n", "\n").replace("\r", "\n")
        assert decoded.event == (event or "message")
        assert decoded.id == last_id
        assert decoded.retry == retry
    assert decoder.comments == [" ping"] * sum(keepalive for _, keepalive in items)


@given(st.text())
def test_sse_event_ids_are_refused_exactly_when_a_decoder_could_not_read_them_back(event_id: str) -> None:
    unreadable = any(ch in event_id for ch in "\r\n\0")
    try:
        encoded = encode_event("x", event_id=event_id)
    except ValueError:
        assert unreadable
        return
    assert not unreadable
    [decoded] = SSEDecoder().feed(encoded)
    assert decoded.id == event_id


# -- header parsing ------------------------------------------------------------------------------

JSON_RANGES: Final = ("*/*", "application/*", "application/json")
SSE_RANGES: Final = ("*/*", "text/*", "text/event-stream")
ZERO_QVALUES: Final = ("0", "0.", "0.0", "0.00", "0.000")
NONZERO_QVALUES: Final = ("1", "1.0", "1.000", "0.5", "0.001", "0.9", "0.01")
OWS = st.sampled_from(("", " ", "  ", "\t"))


def _case(draw: st.DrawFn, text: str) -> str:
    return "".join(ch.upper() if draw(st.booleans()) else ch for ch in text)


@st.composite
def accept_entries(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(entry text, media range, refused by q=0) in RFC 9110 syntax, with arbitrary letter case."""
    media = draw(st.sampled_from((*JSON_RANGES, *SSE_RANGES, "text/html", "application/jsonx", "image/png")))
    params: list[str] = []
    refused = False
    if draw(st.booleans()):
        params.append(f"{_case(draw, 'charset')}=utf-8")
    if draw(st.booleans()):
        zero = draw(st.booleans())
        qvalue = draw(st.sampled_from(ZERO_QVALUES if zero else NONZERO_QVALUES))
        params.append(f"{_case(draw, 'q')}={qvalue}")
        refused = zero
    entry = _case(draw, media) + "".join(f"{draw(OWS)};{draw(OWS)}{p}" for p in params)
    return entry, media, refused


@given(st.lists(st.tuples(accept_entries(), OWS, OWS), max_size=5))
def test_accepts_agrees_with_rfc_9110(entries: list[tuple[tuple[str, str, bool], str, str]]) -> None:
    header = ",".join(f"{before}{entry}{after}" for (entry, _, _), before, after in entries)
    json_ok = any(media in JSON_RANGES and not refused for (_, media, refused), _, _ in entries)
    sse_ok = any(media in SSE_RANGES and not refused for (_, media, refused), _, _ in entries)
    assert accepts(header) == (json_ok, sse_ok), header


@given(st.text())
def test_accepts_never_raises(header: str) -> None:
    json_ok, sse_ok = accepts(header)
    assert isinstance(json_ok, bool)
    assert isinstance(sse_ok, bool)


@given(st.one_of(st.none(), st.sampled_from((*LEGACY_VERSIONS, *MODERN_VERSIONS)), st.text()))
def test_era_of_is_total(header: str | None) -> None:
    if header is None:
        assert era_of(header) == ("legacy", DEFAULT_LEGACY_VERSION)
    elif header in MODERN_VERSIONS:
        assert era_of(header) == ("modern", header)
    elif header in LEGACY_VERSIONS:
        assert era_of(header) == ("legacy", header)
    else:
        with pytest.raises(ProtocolError) as caught:
            era_of(header)
        error = caught.value
        assert (error.status, error.code) == (400, UNSUPPORTED_PROTOCOL_VERSION)
        body = error.error_body()
        assert body is not None
        assert body["error"]["data"]["requested"] == header[:64]
        dumps(body)  # always serializable


# Every Unicode whitespace character, next to the token characters and both scheme spellings.
WHITESPACE: Final = "".join(ch for ch in map(chr, range(sys.maxunicode + 1)) if ch.isspace())


@given(st.text(alphabet=WHITESPACE + "aB=", max_size=8), st.sampled_from(("Bearer", "bEARER", "Bearer ", "Basic ")))
def test_parse_bearer_refuses_exactly_the_tokens_with_inner_whitespace(tail: str, scheme: str) -> None:
    header = scheme + tail
    # Oracle: RFC 6750 b64token has no whitespace at all; the transport tolerates it around the value.
    name, _, token = header.strip().partition(" ")
    token = token.strip()
    valid = name.lower() == "bearer" and token != "" and not any(ch.isspace() for ch in token)
    assert parse_bearer(header) == (token if valid else None), header


# A tiny alphabet, so roots, endpoints and other paths often share (partial) segments.
segments = st.lists(st.text("ab.", min_size=1, max_size=3), max_size=3)


def as_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


@given(segments, segments, st.booleans())
def test_endpoint_matches_both_root_path_shapes(endpoint_parts: list[str], root_parts: list[str], slash: bool) -> None:
    endpoint = as_path(endpoint_parts)
    root = as_path(root_parts) if root_parts else ""
    trailing = "/" if slash and endpoint != "/" else ""
    # ASGI: `path` includes `root_path`.
    assert endpoint_matches(root + (endpoint if endpoint != "/" else "") + trailing, root, endpoint)
    # Some frameworks leave `root_path` out of `path`; unambiguous unless the endpoint itself lies under it.
    if not root or not (endpoint == root or endpoint.startswith(root + "/")):
        assert endpoint_matches(endpoint + trailing, root, endpoint)


def _normal(path: str) -> str:
    path = path[:-1] if path.endswith("/") and len(path) > 1 else path
    return path or "/"


@given(segments, segments, segments, st.booleans())
def test_endpoint_matches_nothing_else(
    endpoint_parts: list[str], root_parts: list[str], other_parts: list[str], slash: bool
) -> None:
    """With `root_path` in `path` (the ASGI shape), a path matches exactly when the rest names the endpoint."""
    endpoint, other = as_path(endpoint_parts), as_path(other_parts) + ("/" if slash else "")
    root = as_path(root_parts) if root_parts else ""
    assert endpoint_matches(root + other, root, endpoint) == (_normal(other) == endpoint)


@given(st.text(string.ascii_letters + "/-_", max_size=20))
def test_normalize_endpoint_is_idempotent(raw: str) -> None:
    normal = normalize_endpoint(raw)
    assert normal.startswith("/")
    assert normal == "/" or not normal.endswith("/")
    assert normalize_endpoint(normal) == normal
    assert endpoint_matches(normal, "", normal)


token_chars = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
header_names = st.text(token_chars, min_size=1, max_size=12)
header_values = st.binary(max_size=20).map(lambda raw: raw.decode("latin-1"))


@given(st.lists(st.tuples(header_names, header_values), max_size=10), header_names)
def test_headers_are_a_case_insensitive_first_value_view(items: list[tuple[str, str]], probe: str) -> None:
    headers = Headers([(name.encode(), value.encode("latin-1")) for name, value in items])
    # Values lose their surrounding optional whitespace (RFC 9110 5.5), whatever the server.
    items = [(name, value.strip(" \t")) for name, value in items]
    firsts: dict[str, str] = {}
    for name, value in items:
        firsts.setdefault(name.lower(), value)
    assert len(headers) == len(firsts)
    assert dict(headers) == firsts
    for name, _ in items:
        for variant in (name, name.lower(), name.upper(), name.swapcase()):
            assert variant in headers
            assert headers[variant] == firsts[name.lower()]
            assert headers.getlist(variant) == [v for n, v in items if n.lower() == name.lower()]
    assert (probe in headers) == (probe.lower() in firsts)
    assert headers.raw_items() == [(name.lower(), value) for name, value in items]


# -- JSON-RPC classification ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids_any = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans(), st.floats(), st.lists(st.integers()))
message_keys = {
    "jsonrpc": st.one_of(st.just("2.0"), st.just("2.0"), st.sampled_from(("1.0", "2", 2.0, None))),
    "id": ids_any,
    "method": st.one_of(st.text(max_size=12), st.integers(), st.none()),
    "params": st.one_of(st.dictionaries(st.text(max_size=4), json_values, max_size=3), json_values),
    "result": json_values,
    "error": st.one_of(st.fixed_dictionaries({"code": st.integers(), "message": st.text(max_size=8)}), json_values),
}


@st.composite
def near_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Objects with any subset of the JSON-RPC members, each well- or ill-typed."""
    keys = draw(st.sets(st.sampled_from(sorted(message_keys))))
    return {key: draw(message_keys[key]) for key in sorted(keys)}


def valid_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def oracle(obj: dict[str, Any]) -> str | None:
    """JSON-RPC 2.0 (and MCP: params are objects, no batches): the kind, or None for invalid."""
    if obj.get("jsonrpc") != "2.0":
        return None
    has_id, msg_id = "id" in obj, obj.get("id")
    if has_id and not valid_id(msg_id) and not (msg_id is None and "error" in obj):
        return None
    if "method" in obj and obj["method"] is not None:
        method, params = obj["method"], obj.get("params")
        if not isinstance(method, str) or not method or (params is not None and not isinstance(params, dict)):
            return None
        return "request" if has_id else "notification"
    if not has_id:
        return None
    if "result" in obj and "error" not in obj:
        return "response"
    if "error" in obj and "result" not in obj and isinstance(obj["error"], dict):
        return "error"
    return None


def classify_or_error(body: bytes) -> tuple[str, Any]:
    """Parse a body; anything but a `ProtocolError` escapes and fails the test."""
    refused: ProtocolError | None = None
    try:
        message = parse_body(body)
    except ProtocolError as error:
        refused = error
    if refused is None:
        return message.kind, message
    assert refused.status == 400
    assert refused.code in (PARSE_ERROR, INVALID_REQUEST)
    error_body = refused.error_body()
    assert error_body is not None
    dumps(error_body)  # the error always goes on the wire
    return "refused", refused


@given(near_messages())
def test_parse_body_classifies_like_the_spec(obj: dict[str, Any]) -> None:
    kind, outcome = classify_or_error(json.dumps(obj).encode())
    expected = oracle(obj)
    assert kind == (expected or "refused"), obj
    if kind == "refused":
        # The id is echoed when it can be read, so the client can match the error to its request.
        assert outcome.code == INVALID_REQUEST
        assert outcome.request_id == (obj.get("id") if valid_id(obj.get("id")) else None)
    else:
        assert outcome.raw == obj
        assert outcome.id == (obj.get("id") if kind != "notification" else None)


@given(json_values)
def test_parse_body_refuses_any_other_json(value: Any) -> None:
    kind, _ = classify_or_error(json.dumps(value).encode())
    assert kind == "refused" or isinstance(value, dict)


@given(st.binary(max_size=256))
def test_parse_body_never_raises_anything_but_protocol_errors(body: bytes) -> None:
    classify_or_error(body)


@given(st.integers(1, 200_000), st.sampled_from("[{"))
@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
def test_parse_body_survives_deep_nesting(depth: int, opener: str) -> None:
    body = '{"a":' * depth + "1" + "}" * depth if opener == "{" else "[" * depth + "]" * depth
    kind, _ = classify_or_error(body.encode())
    assert kind == "refused"


# -- event ids -------------------------------------------------------------------------------------

stream_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)


@given(st.lists(st.tuples(stream_ids, st.booleans()), min_size=1, max_size=40), st.integers(1, 5), st.integers(1, 4))
def test_in_memory_event_ids_name_their_stream(
    appends: list[tuple[str, bool]], max_events: int, max_streams: int
) -> None:
    """Model: per stream, its last `max_events` events; streams evicted least recently written first."""
    store = InMemoryEventStore(max_events_per_stream=max_events, max_streams=max_streams)
    model: dict[str, list[tuple[str, str | None]]] = {}
    order: list[str] = []
    issued: list[tuple[str, str]] = []
    for n, (stream, priming) in enumerate(appends):
        payload = None if priming else f'{{"n":{n}}}'
        event_id = store.append_raw(stream, payload)
        issued.append((event_id, stream))
        model.setdefault(stream, []).append((event_id, payload))
        model[stream] = model[stream][-max_events:]
        if stream in order:
            order.remove(stream)
        order.append(stream)
        while len(order) > max_streams:
            del model[order.pop(0)]
    assert len(store) == len(model)
    assert len({event_id for event_id, _ in issued}) == len(issued)
    for event_id, stream in issued:
        found = store.events_after(event_id)
        if stream not in model:
            assert found is None
            continue
        assert found is not None
        assert found[0] == stream  # the id names its stream, whatever characters the stream id holds
        kept = [eid for eid, _ in model[stream]]
        position = [eid for eid, s in issued if s == stream].index(event_id)
        later = [eid for eid, s in issued if s == stream][position + 1 :]
        assert [stored.event_id for stored in found[1]] == [eid for eid in later if eid in kept]


@given(st.text(max_size=40), st.lists(stream_ids, max_size=3))
def test_in_memory_event_store_takes_any_last_event_id(last_event_id: str, streams: list[str]) -> None:
    store = InMemoryEventStore()
    for stream in streams:
        store.append_raw(stream, "{}")
    found = store.events_after(last_event_id)
    assert found is None or last_event_id.startswith(found[0] + "#")


class _OpaqueStore(InMemoryEventStore):
    """A user's store: EventLog only sees the SDK's ABC (and it replays any id to anyone)."""


tags = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=6)


@pytest.mark.anyio
@pytest.mark.parametrize("opaque", [False, True], ids=["builtin", "user-store"])
@given(
    st.lists(st.tuples(tags, st.sampled_from(("get", "r1", "r2")), st.booleans()), min_size=1, max_size=12),
    st.lists(st.text(max_size=30), max_size=4),
    tags,
)
async def test_event_log_never_replays_across_tags(
    opaque: bool, writes: list[tuple[str, str, bool]], junk: list[str], reader: str
) -> None:
    store = _OpaqueStore() if opaque else InMemoryEventStore()
    log = EventLog(store)
    issued: list[tuple[str, str, str]] = []  # (event id, tag, stream)
    primed: set[str] = set()
    for n, (tag, stream, priming) in enumerate(writes):
        message = None if priming else {"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}}
        event_id = await log.store(f"{tag}/{stream}", message, None if message is None else dumps(message))
        issued.append((event_id, tag, f"{tag}/{stream}"))
        if priming:
            primed.add(event_id)
    for event_id, tag, stream in issued:
        found = await log.replay(event_id, reader)
        if tag != reader:
            assert found is None, (event_id, reader)
            continue
        assert found is not None
        assert found[0] == stream
        later = [eid for eid, _, s in issued if s == stream]
        later = later[later.index(event_id) + 1 :]
        assert [e.event_id for e in found[1]] == [eid for eid in later if eid not in primed]
    for value in junk:
        found = await log.replay(value, reader)
        assert found is None or found[0].startswith(reader + "/")


# -- the session lifecycle table -----------------------------------------------------------------


@given(st.sampled_from(SessionState), st.sampled_from(SessionInput))
def test_every_state_input_pair_is_a_transition_or_refused(state: SessionState, event: SessionInput) -> None:
    if (state, event) in TRANSITIONS:
        after = next_state(state, event)
        assert after is TRANSITIONS[(state, event)]
        # Closing always closes; nothing leaves CLOSED; only DRAIN keeps a draining session draining.
        assert (after is SessionState.CLOSED) == (event is SessionInput.CLOSE)
        assert state is not SessionState.CLOSED
    else:
        with pytest.raises(InvalidTransition):
            next_state(state, event)


@given(st.lists(st.sampled_from(SessionInput), max_size=8))
def test_an_entry_follows_the_table_and_a_refused_input_changes_nothing(events: list[SessionInput]) -> None:
    entry: SessionEntry[None] = SessionEntry("s", "o", None, None, created_at=0.0)
    for event in events:
        before = entry.state
        if (before, event) in TRANSITIONS:
            assert entry.apply(event) is TRANSITIONS[(before, event)]
        else:
            with pytest.raises(InvalidTransition):
                entry.apply(event)
            assert entry.state is before
    assert (entry.state in ADDRESSABLE) == (entry.state in (SessionState.ACTIVE, SessionState.DRAINING))


# -- SessionTable, model-based -----------------------------------------------------------------------

TIMEOUT: Final = 10.0
OWNER_NAMES: Final = ("alice", "bob", "")
TENANTS: Final = ("t1", "t2", None)


class SessionTableMachine(RuleBasedStateMachine):
    """The table against a plain model, with explicit, non-decreasing `now` and a shell that behaves
    like `LegacyEndpoint` (it removes what `expired` reports and what `end` says should end)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.counter = 0
        self.idle_timeout: float | None = TIMEOUT
        self.table: SessionTable[str] = SessionTable(max_sessions=4, idle_timeout=TIMEOUT)
        self.model: dict[str, dict[str, Any]] = {}
        self.removed: set[str] = set()

    @initialize(idle=st.sampled_from((TIMEOUT, None)))
    def configure(self, idle: float | None) -> None:
        self.table = SessionTable(max_sessions=4, idle_timeout=idle)
        self.idle_timeout = idle

    def _pick(self, pick: int, *states: SessionState) -> str:
        ids = [sid for sid, m in self.model.items() if not states or m["state"] in states]
        return ids[pick % len(ids)]

    def _true_deadline(self, m: dict[str, Any]) -> float | None:
        idle: float | None = None
        if m["in_flight"] == 0 and m["idle_since"] is not None and self.idle_timeout is not None:
            idle = m["idle_since"] + self.idle_timeout
        drain: float | None = m["drain"]
        if drain is None:
            return idle
        return drain if idle is None else min(idle, drain)

    def _remove(self, session_id: str) -> None:
        entry = self.table.remove(session_id)
        assert entry is not None
        assert entry.state is SessionState.CLOSED
        del self.model[session_id]
        self.removed.add(session_id)

    @rule(dt=st.sampled_from((0.5, 1.0, TIMEOUT / 2, TIMEOUT, 2 * TIMEOUT)), reap=st.booleans())
    def advance(self, dt: float, reap: bool) -> None:
        """Time passes; the reaper may run then (or late: a later `advance` or `reap`)."""
        self.now += dt
        if reap:
            self.reap()

    @rule(owner=st.sampled_from(OWNER_NAMES), tenant=st.sampled_from(TENANTS), succeed=st.booleans())
    def open(self, owner: str, tenant: str | None, succeed: bool) -> None:
        self.counter += 1
        session_id = f"s{self.counter}"
        if len(self.model) >= 4:
            with pytest.raises(ProtocolError) as caught:
                self.table.open(session_id, owner=owner, tenant_id=tenant, value=session_id, now=self.now)
            assert (caught.value.status, caught.value.code) == (503, SERVER_BUSY)
            return
        entry = self.table.open(session_id, owner=owner, tenant_id=tenant, value=session_id, now=self.now)
        assert (entry.state, entry.in_flight) == (SessionState.OPENING, 1)
        model = {"owner": owner, "tenant": tenant, "state": SessionState.OPENING, "in_flight": 1}
        self.model[session_id] = {**model, "idle_since": None, "drain": None, "end_when_idle": False}
        if not succeed:
            self._remove(session_id)  # initialize refused
            return
        self.table.activate(entry)
        self.model[session_id]["state"] = SessionState.ACTIVE
        self._end(session_id)  # the initialize exchange

    def _end(self, session_id: str) -> None:
        m = self.model[session_id]
        entry = self.table.get(session_id)
        assert entry is not None
        should_end = self.table.end(entry, self.now)
        m["in_flight"] -= 1
        if m["in_flight"] == 0:
            m["idle_since"] = self.now
        assert should_end == (m["in_flight"] == 0 and m["end_when_idle"])
        if should_end:
            self._remove(session_id)

    @precondition(lambda self: any(m["state"] in ADDRESSABLE for m in self.model.values()))
    @rule(pick=st.integers(0, 15))
    def begin(self, pick: int) -> None:
        session_id = self._pick(pick, *ADDRESSABLE)
        entry = self.table.get(session_id)
        assert entry is not None
        self.table.begin(entry)
        self.model[session_id]["in_flight"] += 1
        self.model[session_id]["idle_since"] = None

    @precondition(lambda self: any(m["in_flight"] > 0 and m["state"] in ADDRESSABLE for m in self.model.values()))
    @rule(pick=st.integers(0, 15))
    def end(self, pick: int) -> None:
        busy = [sid for sid, m in self.model.items() if m["in_flight"] > 0 and m["state"] in ADDRESSABLE]
        self._end(busy[pick % len(busy)])

    @precondition(lambda self: any(m["state"] in ADDRESSABLE for m in self.model.values()))
    @rule(pick=st.integers(0, 15), after=st.sampled_from((0.0, 1.0, TIMEOUT, 3 * TIMEOUT)), removed=st.booleans())
    def drain(self, pick: int, after: float, removed: bool) -> None:
        session_id = self._pick(pick, *ADDRESSABLE)
        m = self.model[session_id]
        entry = self.table.get(session_id)
        assert entry is not None
        ends_now = self.table.drain(entry, self.now + after, end_when_idle=removed)
        m["state"] = SessionState.DRAINING
        m["drain"] = self.now + after if m["drain"] is None else min(m["drain"], self.now + after)
        m["end_when_idle"] = m["end_when_idle"] or removed
        assert ends_now == (m["end_when_idle"] and m["in_flight"] == 0)
        if ends_now:
            self._remove(session_id)

    @precondition(lambda self: bool(self.model))
    @rule(pick=st.integers(0, 15))
    def remove(self, pick: int) -> None:
        self._remove(self._pick(pick))

    @rule(session_id=st.sampled_from(("s1", "s2", "s3", "nope")))
    def remove_again_is_harmless(self, session_id: str) -> None:
        if session_id in self.removed or session_id not in self.model:
            assert self.table.remove(session_id) is None

    @rule()
    def reap(self) -> None:
        expired = self.table.expired(self.now)
        ids = [entry.session_id for entry in expired]
        assert len(ids) == len(set(ids)), ids  # each session reported once
        due = {sid for sid, m in self.model.items() if (d := self._true_deadline(m)) is not None and d <= self.now}
        assert set(ids) == due
        for session_id in ids:
            self._remove(session_id)

    @invariant()
    def agrees(self) -> None:
        assert len(self.table) == len(self.model)
        assert self.table.per_tenant() == {
            tenant: count for tenant, count in Counter(m["tenant"] for m in self.model.values()).items()
        }
        for session_id, m in self.model.items():
            entry = self.table.get(session_id)
            assert entry is not None
            assert (entry.state, entry.in_flight, entry.end_when_idle) == (
                m["state"],
                m["in_flight"],
                m["end_when_idle"],
            )
            for owner in (*OWNER_NAMES, "mallory"):
                found = self.table.lookup(session_id, owner)
                addressable = owner == m["owner"] and m["state"] in ADDRESSABLE
                assert (found is entry) if addressable else (found is None)
        for session_id in self.removed:
            assert self.table.get(session_id) is None
            assert all(self.table.lookup(session_id, owner) is None for owner in OWNER_NAMES)

    @invariant()
    def the_reaper_never_wakes_too_late(self) -> None:
        """`next_deadline` is no later than any session's true deadline (stale earlier items are fine)."""
        deadlines = [d for m in self.model.values() if (d := self._true_deadline(m)) is not None]
        if deadlines:
            head = self.table.next_deadline()
            assert head is not None
            assert head <= min(deadlines)

    @invariant()
    def the_heap_stays_small(self) -> None:
        assert len(self.table._deadlines) <= 3 * len(self.model) + 65


SessionTableMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestSessionTable = SessionTableMachine.TestCase


def test_model_oracles_are_sane() -> None:
    """The oracles above, on the spec's own examples."""
    assert oracle({"jsonrpc": "2.0", "id": 1, "method": "x"}) == "request"
    assert oracle({"jsonrpc": "2.0", "method": "x"}) == "notification"
    assert oracle({"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": ""}}) == "error"
    assert oracle({"jsonrpc": "2.0", "id": 1, "result": None}) == "response"
    assert oracle({"jsonrpc": "2.0", "id": True, "method": "x"}) is None
