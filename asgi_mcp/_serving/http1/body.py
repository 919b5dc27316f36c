"""Request body framing, sans-IO and shared by both parsers: Content-Length and chunked (RFC 9112 §7.1).

Trailer fields are read and dropped (bounded); chunk extensions are skipped.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from .errors import HttpRefusal

__all__ = ["BodyReader"]

_CHUNK_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_CHUNK_LINE: Final = 4096
_MAX_TRAILERS: Final = 16 * 1024


class _Part(enum.Enum):
    LENGTH = "length"
    SIZE = "size"
    DATA = "data"
    DATA_END = "data-end"
    TRAILERS = "trailers"
    DONE = "done"


# The members as module globals: read on every request, and an enum member's attribute lookup on
# its class costs several times a global's.
_LENGTH: Final = _Part.LENGTH
_SIZE: Final = _Part.SIZE
_DATA: Final = _Part.DATA
_DATA_END: Final = _Part.DATA_END
_TRAILERS: Final = _Part.TRAILERS
_DONE: Final = _Part.DONE


class BodyReader:
    """Takes body bytes off the front of a connection buffer; `done` once the body has ended."""

    __slots__ = ("done", "part", "remaining", "trailer_bytes")

    def __init__(self, content_length: int, chunked: bool) -> None:
        self.remaining = content_length
        self.trailer_bytes = 0
        if chunked:
            self.part = _SIZE
        else:
            self.part = _LENGTH if content_length else _DONE
        self.done = self.part is _DONE

    def read(self, buffer: bytearray) -> bytes:
        """Body bytes available now (maybe b""); raises `HttpRefusal` (400) on broken framing."""
        if self.part is _LENGTH:
            taken = bytes(buffer[: self.remaining])
            del buffer[: len(taken)]
            self.remaining -= len(taken)
            if not self.remaining:
                self.part = _DONE
                self.done = True
            return taken
        if self.part is _DONE:
            return b""
        return self._read_chunked(buffer)

    def _read_chunked(self, buffer: bytearray) -> bytes:
        out: list[bytes] = []
        while True:
            part = self.part
            if part is _DATA:
                taken = bytes(buffer[: self.remaining])
                if not taken:
                    break
                del buffer[: len(taken)]
                out.append(taken)
                self.remaining -= len(taken)
                if self.remaining:
                    break
                self.part = _DATA_END
            elif part is _DATA_END:
                if len(buffer) < 2:
                    break
                if not buffer.startswith(b"\r\n"):
                    raise HttpRefusal(400, "malformed chunk")
                del buffer[:2]
                self.part = _SIZE
            elif part is _SIZE:
                line = self._line(buffer, _MAX_CHUNK_LINE)
                if line is None:
                    break
                size = line.split(b";", 1)[0].rstrip(b" \t")
                if not _CHUNK_SIZE.fullmatch(size):
                    raise HttpRefusal(400, "invalid chunk size")
                self.remaining = int(size, 16)
                self.part = _DATA if self.remaining else _TRAILERS
            elif part is _TRAILERS:
                line = self._line(buffer, _MAX_TRAILERS - self.trailer_bytes)
                if line is None:
                    break
                self.trailer_bytes += len(line) + 2
                if not line:
                    self.part = _DONE
                    self.done = True
                    break
                if line[:1] in (b" ", b"\t") or b":" not in line:
                    raise HttpRefusal(400, "malformed trailer")
            else:
                break
        return b"".join(out)

    @staticmethod
    def _line(buffer: bytearray, limit: int) -> bytes | None:
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > limit:
                raise HttpRefusal(400, "chunk line too long")
            return None
        if end > limit:
            raise HttpRefusal(400, "chunk line too long")
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        if b"\n" in line or b"\r" in line:
            raise HttpRefusal(400, "bare CR or LF in chunked body")
        return line
