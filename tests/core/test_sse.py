"""SSE framing: `encode_event` round-trips through an independent WHATWG decoder."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp._core.sse import KEEPALIVE, encode_event
from tests.kit.sse import SSEDecoder, decode_all

LINE_BREAKS = ("\r\n", "\r", "\n")
# Field values other than data cannot hold line breaks; NUL is excluded from ids by the spec.
single_line = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))
event_ids = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)))
event_names = single_line.filter(bool)  # an empty event name means "message" to a decoder


def normalized(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


@given(
    data=st.text(),
    event=st.one_of(st.none(), event_names),
    event_id=st.one_of(st.none(), event_ids),
    retry=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
)
def test_round_trip(data: str, event: str | None, event_id: str | None, retry: int | None) -> None:
    events = decode_all(encode_event(data, event=event, event_id=event_id, retry_ms=retry))
    assert len(events) == 1
    decoded = events[0]
    assert decoded.data == normalized(data)
    assert decoded.event == (event if event is not None else "message")
    assert decoded.id == event_id
    assert decoded.retry == retry


@given(st.lists(st.tuples(st.text(), st.one_of(st.none(), event_ids)), min_size=1, max_size=8), st.data())
def test_concatenated_events_decode_in_order_from_any_chunking(
    items: list[tuple[str, str | None]], data: st.DataObject
) -> None:
    """A stream of events (with keep-alives between them), split anywhere, even inside a UTF-8 sequence."""
    payload = KEEPALIVE.join(encode_event(text, event_id=event_id) for text, event_id in items)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(payload)), max_size=6)))
    decoder = SSEDecoder()
    events = []
    previous = 0
    for cut in [*cuts, len(payload)]:
        events.extend(decoder.feed(payload[previous:cut]))
        previous = cut
    assert [e.data for e in events] == [normalized(text) for text, _ in items]
    # The last event id sticks until another id arrives, as the spec says.
    last: str | None = None
    for event, (_, event_id) in zip(events, items, strict=True):
        last = event_id if event_id is not None else last
        assert event.id == last


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_json_messages_are_one_data_line(value: object) -> None:
    """What the transport actually sends: compact JSON, which never contains a raw line break."""
    text = json.dumps({"jsonrpc": "2.0", "method": "x", "params": {"v": value}}, separators=(",", ":"))
    encoded = encode_event(text)
    assert encoded.count(b"\ndata: ") + encoded.startswith(b"data: ") == 1
    assert json.loads(decode_all(encoded)[0].data) == json.loads(text)


def test_priming_event_is_dispatched_with_empty_data() -> None:
    """SEP-1699: id + retry + empty data. A decoder dispatches it (the data buffer held one empty line)."""
    encoded = encode_event("", event=None, event_id="s/1#1", retry_ms=250)
    assert encoded == b"id: s/1#1\nretry: 250\ndata: \n\n"
    [event] = decode_all(encoded)
    assert (event.data, event.id, event.retry, event.event) == ("", "s/1#1", 250, "message")


def test_keepalive_is_a_comment() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(KEEPALIVE) == []
    assert decoder.comments == [" ping"]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_event_id_with_line_break_or_nul_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="event ids"):
        encode_event("x", event_id=bad)


class TestDecoderAgainstSpecExamples:
    """The decoder itself is checked against the spec's own examples, so the round trip means something."""

    def test_spec_example_multiline_and_ids(self) -> None:
        stream = b"data: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
        events = decode_all(stream)
        assert [(e.data, e.id) for e in events] == [("first event", "1"), ("second event", ""), (" third event", "")]

    def test_spec_example_empty_data_dispatch(self) -> None:
        events = decode_all(b"data\n\ndata\ndata\n\ndata:\n")
        assert [e.data for e in events] == ["", "\n"]  # the last one never got its blank line

    def test_no_data_field_no_event(self) -> None:
        assert decode_all(b"id: 7\nevent: x\n\n") == []

    def test_bom_and_crlf(self) -> None:
        assert [e.data for e in decode_all(b"\xef\xbb\xbfdata: a\r\n\r\ndata: b\r\rdata: c\n\n")] == ["a", "b", "c"]

    def test_u2028_is_not_a_line_break(self) -> None:
        assert decode_all("data: a\u2028b\n\n".encode())[0].data == "a\u2028b"

    def test_retry_must_be_digits(self) -> None:
        assert decode_all(b"retry: 1x\ndata: a\n\n")[0].retry is None
