"""An incremental Server-Sent Events decoder written from the WHATWG HTML spec, independent of asgi_mcp.

"Interpreting an event stream": the stream is UTF-8 (one leading BOM ignored); lines end with
CRLF, LF or CR (only those: not U+2028 and friends, which is why this never uses `splitlines`);
a blank line dispatches the event; `:` starts a comment; a field without a colon has an empty value;
one space after the colon is stripped; `id` containing NUL is ignored; `retry` only takes ASCII
digits; an event whose data buffer is empty is not dispatched (but its id still becomes the last
event id). Keep-alive comments therefore never show up as events, priming events (`data:` with an
empty value) do.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEEvent:
    event: str  # the event type ("message" when the stream named none)
    data: str
    id: str | None  # the last event id in force when this event was dispatched (None: never set)
    retry: int | None  # a `retry` field seen in this event's block, if any


class SSEDecoder:
    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._bom_checked = False
        self._pending_cr = False
        self._data: list[str] = []
        self._event_type = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode more bytes; returns the events completed by them."""
        self._text += self._utf8.decode(chunk)
        if not self._bom_checked and self._text:
            self._bom_checked = True
            if self._text.startswith("\ufeff"):
                self._text = self._text[1:]
        events: list[SSEEvent] = []
        start = 0
        i = 0
        text = self._text
        while i < len(text):
            ch = text[i]
            if self._pending_cr:
                # The LF of a CRLF pair whose CR ended the previous line.
                self._pending_cr = False
                if ch == "\n":
                    i += 1
                    start = i
                    continue
            if ch in "\r\n":
                line = text[start:i]
                if ch == "\r":
                    self._pending_cr = True
                i += 1
                start = i
                event = self._line(line)
                if event is not None:
                    events.append(event)
                continue
            i += 1
        self._text = text[start:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:])
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            self._retry = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> SSEEvent | None:
        data, event_type, retry = self._data, self._event_type, self._retry
        self._data, self._event_type, self._retry = [], "", None
        if not data:
            return None  # the spec's "data buffer is empty": nothing dispatched
        return SSEEvent(event_type or "message", "\n".join(data), self._last_id, retry)


def decode_all(payload: bytes) -> list[SSEEvent]:
    return SSEDecoder().feed(payload)
