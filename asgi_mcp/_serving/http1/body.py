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


class BodyReader:
    """Takes body bytes off the front of a connection buffer; `done` once the body has ended."""

    __slots__ = ("done", "part", "remaining", "trailer_bytes")

    def __init__(self, content_length: int, chunked: bool) -> None:
        self.remaining = content_length
        self.trailer_bytes = 0
        if chunked:
            self.part = _Part.SIZE
        else:
            self.part = _Part.LENGTH if content_length else _Part.DONE
        self.done = self.part is _Part.DONE

    def read(self, buffer: bytearray) -> bytes:
        """Body bytes available now (maybe b""); raises `HttpRefusal` (400) on broken framing."""
        if self.part is _Part.LENGTH:
            taken = bytes(buffer[: self.remaining])
            del buffer[: len(taken)]
            self.remaining -= len(taken)
            if not self.remaining:
                self.part = _Part.DONE
                self.done = True
            return taken
        if self.part is _Part.DONE:
            return b""
        return self._read_chunked(buffer)

    def _read_chunked(self, buffer: bytearray) -> bytes:
        out: list[bytes] = []
        while True:
            part = self.part
            if part is _Part.DATA:
                taken = bytes(buffer[: self.remaining])
                if not taken:
                    break
                del buffer[: len(taken)]
                out.append(taken)
                self.remaining -= len(taken)
                if self.remaining:
                    break
                self.part = _Part.DATA_END
            elif part is _Part.DATA_END:
                if len(buffer) < 2:
                    break
                if not buffer.startswith(b"\r\n"):
                    raise HttpRefusal(400, "malformed chunk")
                del buffer[:2]
                self.part = _Part.SIZE
            elif part is _Part.SIZE:
                line = self._line(buffer, _MAX_CHUNK_LINE)
                if line is None:
                    break
                size = line.split(b";", 1)[0].rstrip(b" \t")
                if not _CHUNK_SIZE.fullmatch(size):
                    raise HttpRefusal(400, "invalid chunk size")
                self.remaining = int(size, 16)
                self.part = _Part.DATA if self.remaining else _Part.TRAILERS
            elif part is _Part.TRAILERS:
                line = self._line(buffer, _MAX_TRAILERS - self.trailer_bytes)
                if line is None:
                    break
                self.trailer_bytes += len(line) + 2
                if not line:
                    self.part = _Part.DONE
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
