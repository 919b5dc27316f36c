"""Who a request runs as: the credential a session is bound to and the tenant whose server serves it.
Both eras take one; the app builds it from the request's authentication."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._kernel.hosting import ServerHost

__all__: list[str] = []


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the credential a session is bound to, and the tenant whose server serves it."""

    owner: str
    tenant_id: str | None
    host: Callable[[], Awaitable[ServerHost]]
    # A tenant token's digest and wall-clock expiry (None: never): what its exchanges end with.
    credential: tuple[bytes, float | None] | None = None
