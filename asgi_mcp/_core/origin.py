"""DNS-rebinding protection: which Host and Origin headers the endpoint answers. Pure; no I/O.

The spec requires servers to validate `Origin` (403 when invalid, 2025-11-25). Defaults are safe
without configuration: a server bound to a loopback address answers only loopback `Host` names and
loopback origins (a web page elsewhere cannot reach it through a rebound DNS name); any other bind
answers any `Host` but only same-origin browser requests. Explicit allow-lists replace the defaults.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from .errors import SecurityRefusal
from .http import text

__all__: list[str] = []

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@functools.lru_cache(maxsize=1024)
def _is_loopback_host(host: str) -> bool:
    # Cached: every request asks about the same few Host values, and address parsing is not free.
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # only a well-formed IPv6 literal: "[::1" is no loopback name
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1024)
def _names_loopback(host_header: str) -> bool:
    """Whether a `Host` header (`host[:port]`) names a loopback host; cached as `_is_loopback_host`."""
    return _is_loopback_host(_split_host(host_header)[0])


def _split_host(value: str) -> tuple[str, str | None]:
    """`host[:port]` (IPv6 in brackets) into its parts.

    A port that is not ASCII digits is no port: the whole value is then the host, which names no
    loopback or allowed host (`localhost:1@evil.example` must not pass for `localhost`).
    """
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :]
        if end == -1 or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return value, None
        return value[: end + 1], rest[1:] if rest else None
    host, sep, port = value.rpartition(":")
    if not sep or ":" in host or not _is_port(port):
        return value, None
    return host, port


def _is_port(value: str) -> bool:
    return value == "" or (value.isascii() and value.isdigit())


def _strip_port(value: str) -> str:
    """A Host (`host[:port]`) or an Origin (`scheme://host[:port]`) without its port.

    The scheme is split off first: its `:` would otherwise hide an origin's port from `_split_host`.
    """
    scheme, sep, rest = value.rpartition("://")
    return scheme + sep + _split_host(rest)[0]


def _matches(value: str, patterns: Sequence[str]) -> bool:
    """Exact (case-insensitive) match, or `prefix:*` for any port."""
    value = value.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == "*" or pattern == value:
            return True
        if pattern.endswith(":*") and _strip_port(value) == pattern[:-2]:
            return True
    return False


class OriginPolicy:
    """Decides whether a request's `Host` and `Origin` headers are acceptable.

    Args:
        allowed_hosts: `Host` values answered (`"example.com"`, `"example.com:*"` for any port,
            `"*"` for any). None: the default described in the module docstring.
        allowed_origins: `Origin` values answered (`"https://app.example.com"`,
            `"http://localhost:*"`, `"*"`). None: the default.
    """

    def __init__(
        self,
        allowed_hosts: Sequence[str] | None,
        allowed_origins: Sequence[str] | None,
        *,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.allowed_hosts = tuple(allowed_hosts) if allowed_hosts is not None else None
        self.allowed_origins = tuple(allowed_origins) if allowed_origins is not None else None
        # Origins the app lets browsers call it from (CORS) pass this check too, on top of the
        # default or explicit list: the two settings never contradict each other. Spelled as
        # `CorsPolicy` reads them (a trailing slash is not part of an origin).
        self.cors_origins = tuple(origin.rstrip("/") for origin in cors_origins)
        # (Host line, Origin line, the server's host) as sent, for those that passed: every request
        # of a client sends the same. Bounded: past the bound, new ones are checked each time.
        self._passed: set[tuple[bytes | None, bytes | None, object]] = set()

    def check_raw(self, host: bytes | None, origin: bytes | None, server: Any) -> None:
        """`check` of the header lines as the server sent them (`Headers.raw`), its passes kept."""
        seen = (host, origin, server[0] if server else None)
        if seen in self._passed:
            return
        self.check(_text(host), _text(origin), server)
        if len(self._passed) < _PASSED_KEPT:
            self._passed.add(seen)

    def check(self, host: str | None, origin: str | None, server: Any) -> None:
        """Raise 421 for a Host nobody serves here, 403 for an Origin not allowed."""
        loopback_bind = bool(server) and _is_loopback_host(str(server[0]))
        if self.allowed_hosts is not None:
            if host is None or not _matches(host, self.allowed_hosts):
                raise _refused(421, "Invalid Host header", "Host header not in allowed_hosts")
        elif loopback_bind and (host is None or not _names_loopback(host)):
            raise _refused(421, "Invalid Host header", "non-loopback Host on a loopback-bound server")
        if origin is None:
            return  # not a browser request (or a same-origin GET): nothing to validate
        if self.cors_origins and _matches(origin, self.cors_origins):
            return
        if self.allowed_origins is not None:
            if not _matches(origin, self.allowed_origins):
                raise _refused(403, "Forbidden: invalid Origin header", "Origin not in allowed_origins")
            return
        try:
            parts = urlsplit(origin)
        except ValueError:  # "http://[::1": not an origin any browser sends
            raise _refused(403, "Forbidden: invalid Origin header", "malformed Origin header") from None
        origin_host = parts.hostname or ""
        if loopback_bind:
            if not _is_loopback_host(origin_host):
                raise _refused(
                    403, "Forbidden: invalid Origin header", "non-loopback Origin on a loopback-bound server"
                )
            return
        if host is None or parts.netloc.lower() != host.lower():
            raise _refused(403, "Forbidden: invalid Origin header", "cross-origin request without allowed_origins")


_PASSED_KEPT = 1024


def _text(value: bytes | None) -> str | None:
    return text(value) if value is not None else None


def _refused(status: int, message: str, reason: str) -> SecurityRefusal:
    return SecurityRefusal(status, message, reason=reason)
