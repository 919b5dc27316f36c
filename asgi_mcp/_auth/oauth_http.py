"""What the token verifiers share: endpoint URL checks, the HTTP client, claim parsing.

The verifiers talk to an authorization server (JWKS, RFC 7662 introspection) with `httpx2`, the
client the `mcp` SDK already depends on; it runs on asyncio and Trio alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import httpx2

from .._core.errors import ConfigurationError
from .._core.origin import _is_loopback_host  # pyright: ignore[reportPrivateUsage]

__all__: list[str] = []

# An authorization server's answers are small; a bigger one is a misconfiguration or an attack.
MAX_RESPONSE_BYTES: Final = 1024 * 1024


class FetchError(Exception):
    """An authorization-server endpoint did not give a usable answer (network, status, or body)."""


def check_endpoint_url(url: str, what: str) -> str:
    """`url` if it is https, or http to a loopback host (a local IdP in development and tests).

    Plain http elsewhere would let anyone on the path swap the signing keys or read credentials
    (the MCP authorization spec requires https for authorization-server endpoints).
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _is_loopback_host(parts.hostname):
        return url
    raise ConfigurationError(f"{what} must be an https URL (http only to a loopback host), got {url!r}")


@asynccontextmanager
async def client_for(client: httpx2.AsyncClient | None, time_limit: float) -> AsyncGenerator[httpx2.AsyncClient]:
    """The caller's client, or a fresh one for this call.

    A verifier has no lifespan of its own and may outlive the event loop it first ran on (an app
    run twice, each test on its own loop), so by default it keeps no connection pool across calls.
    Pass a long-lived `http_client` to pool connections.
    """
    if client is not None:
        yield client
        return
    fresh = httpx2.AsyncClient(timeout=httpx2.Timeout(time_limit), follow_redirects=False)
    async with fresh:
        yield fresh


async def get_json(
    client: httpx2.AsyncClient, method: str, url: str, time_limit: float, **options: Any
) -> dict[str, Any]:
    """The JSON object a 200 response carries; `FetchError` for anything else.

    `time_limit` bounds the whole exchange (httpx's timeouts bound each read, not a slow drip), and
    the body is read up to `MAX_RESPONSE_BYTES` only.
    """
    try:
        with anyio.fail_after(time_limit):
            async with client.stream(method, url, **options) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise FetchError("response too large")
    except TimeoutError:
        raise FetchError(f"no answer within {time_limit} s") from None
    except httpx2.HTTPError as error:
        raise FetchError(f"{type(error).__name__}: {error}") from None
    try:
        document: Any = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        raise FetchError("response is not JSON") from None
    if not isinstance(document, dict):
        raise FetchError("response is not a JSON object")
    return document  # pyright: ignore[reportUnknownVariableType]


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    """Granted scopes: `scope` (RFC 8693/9068/7662, space-separated) or `scp` (a list, or a string)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
            return [item for item in items if isinstance(item, str)]
    return []


def string_claim(claims: Mapping[str, Any], *names: str) -> str | None:
    """The first of `names` whose value is a non-empty string."""
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None
