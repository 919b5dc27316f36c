"""Trusted proxy headers: the client address and scheme a configured proxy reports.

Only called for a connection from a trusted proxy (`ServerConfig.trusts`). The address taken is the
rightmost one that is not itself a trusted proxy (RFC 7239 §7.4: what our own proxies added is the
only part to believe); `Forwarded` is preferred to `X-Forwarded-For` / `X-Forwarded-Proto`.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["forwarded_client"]

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _host_port(node: str) -> tuple[str, int] | None:
    node = node.strip().strip('"')
    if not node or node == "unknown" or node.startswith("_"):
        return None
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, int(port) if port.isdigit() and len(port) <= 5 else 0


def _forwarded_elements(value: str) -> list[dict[str, str]]:
    elements: list[dict[str, str]] = []
    for element in value.split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            key, sep, item = pair.partition("=")
            if sep:
                pairs[key.strip().lower()] = item.strip().strip('"')
        elements.append(pairs)
    return elements


def forwarded_client(
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    scheme: str,
    trusted: Callable[[str | None], bool],
) -> tuple[tuple[str, int] | None, str]:
    """(client, scheme) as the proxies report them; unchanged when they report nothing usable."""
    forwarded: list[str] = []
    x_for: list[str] = []
    x_proto = ""
    for name, value in headers:
        if name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            x_for.append(value.decode("latin-1"))
        elif name == b"x-forwarded-proto":
            x_proto = value.decode("latin-1")
    if forwarded:
        for element in reversed(_forwarded_elements(",".join(forwarded))):
            node = _host_port(element.get("for", ""))
            proto = _SCHEMES.get(element.get("proto", "").lower())
            scheme = proto if proto is not None else scheme
            if node is None:
                break
            client = node
            if not trusted(node[0]):
                break
        return client, scheme
    if x_for:
        for entry in reversed(",".join(x_for).split(",")):
            node = _host_port(entry)
            if node is None:
                break
            client = (node[0], 0)
            if not trusted(node[0]):
                break
    if x_proto:
        proto = _SCHEMES.get(x_proto.split(",")[-1].strip().lower())
        scheme = proto if proto is not None else scheme
    return client, scheme
