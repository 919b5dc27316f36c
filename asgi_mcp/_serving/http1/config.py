"""Settings of the built-in server: where it listens, its limits and timeouts (safe by default)."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..._core.errors import ConfigurationError

__all__ = ["ServerConfig"]

ParserChoice = Literal["auto", "h11", "httptools"]
LifespanMode = Literal["auto", "on", "off"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ServerConfig:
    """Everything `serve` needs; every limit and timeout can be changed.

    `forwarded_allow` lists the proxy addresses (IPs or networks, "unix" for Unix-socket peers, "*"
    for any) whose `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` headers are believed;
    from anyone else they are passed to the app untouched but change nothing in the scope.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None  # a Unix socket path instead of host/port
    ssl_context: ssl.SSLContext | None = None
    backlog: int = 2048
    parser: ParserChoice = "auto"
    lifespan: LifespanMode = "auto"
    root_path: str = ""
    forwarded_allow: Sequence[str] = ()
    access_log: bool = False
    # Limits (431, 414, 408 and close).
    max_header_bytes: int = 32 * 1024  # nginx: 4 x 8 KiB
    max_headers: int = 2000  # as Node's; max_header_bytes bounds them first in practice
    max_request_line: int = 8 * 1024
    max_connections: int = 1000
    # Timeouts, in seconds.
    headers_timeout: float = 10.0  # from the first byte of a request (or the connection) to its full head
    keepalive_timeout: float = 5.0  # idle between requests
    write_timeout: float = 30.0  # a peer that stops reading
    graceful_timeout: float = 5.0  # in-flight requests and the lifespan shutdown, each
    tls_handshake_timeout: float = 10.0
    trusted_networks: tuple[Network, ...] = field(init=False, default=())
    trust_any: bool = field(init=False, default=False)
    trust_unix: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        numbers = (self.max_header_bytes, self.max_headers, self.max_request_line, self.max_connections, self.backlog)
        if min(numbers) < 1:
            raise ConfigurationError("limits must be positive")
        timeouts = (self.headers_timeout, self.keepalive_timeout, self.write_timeout, self.tls_handshake_timeout)
        if min(timeouts) <= 0 or self.graceful_timeout < 0:
            raise ConfigurationError("timeouts must be positive (graceful_timeout not negative)")
        if self.root_path.endswith("/"):
            raise ConfigurationError("root_path must not end with '/'")
        networks: list[Network] = []
        for entry in self.forwarded_allow:
            if entry == "*":
                self.trust_any = True
            elif entry == "unix":
                self.trust_unix = True
            else:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ConfigurationError(f"forwarded_allow: not an address or network: {entry!r}") from None
        self.trusted_networks = tuple(networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether proxy headers from this peer address (None: a Unix-socket peer) are believed."""
        if peer is None:
            return self.trust_unix or self.trust_any
        if self.trust_any:
            return True
        if not self.trusted_networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_networks)
