"""`IntrospectionVerifier`: asks the authorization server about each token (RFC 7662).

Opaque tokens can only be checked this way, and it sees revocations at once. That is why caching
is off by default: a cached answer outlives a revocation by up to `cache_ttl` seconds.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx2
from mcp.server.auth.provider import AccessToken

from .._core.errors import ConfigurationError
from .oauth_http import FetchError, check_endpoint_url, client_for, get_json, scopes_of, string_claim

__all__ = ["IntrospectionVerifier"]

logger = logging.getLogger("asgi_mcp.auth")

AuthMethod = Literal["client_secret_basic", "client_secret_post"]


class IntrospectionVerifier:
    """Verifies tokens with an RFC 7662 introspection endpoint.

    Args:
        introspection_url: the endpoint (https, or http to a loopback host).
        client_id: this resource server's client id at the authorization server.
        client_secret: its client secret there (needs `client_id`).
        auth_method: how they are sent: `client_secret_basic` (HTTP Basic, RFC 6749 §2.3.1) or
            `client_secret_post` (form fields).
        cache_ttl: seconds an active answer is reused (0, the default, asks every time). Never
            beyond the token's `exp`. Only SHA-256 digests of tokens are kept as cache keys.
        timeout: seconds one introspection request may take in all.
        max_cache_entries: bound on the cache; the oldest entries go first.
        http_client: an `httpx2.AsyncClient` to use (connection pooling); by default each request
            uses a short-lived client.

    An inactive token, an answer without `client_id` or `sub`, and a failed request all give
    None (the caller answers 401); failures are logged at WARNING on `asgi_mcp.auth`, without
    the token. `client_id` comes from `client_id` (else `sub`), `scopes` from `scope`, `resource`
    from `aud` (its first value), `subject` from `sub`; `claims` is the whole answer.
    """

    def __init__(
        self,
        introspection_url: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth_method: AuthMethod = "client_secret_basic",
        cache_ttl: float = 0.0,
        timeout: float = 5.0,
        max_cache_entries: int = 10_000,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        if auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ConfigurationError("auth_method must be 'client_secret_basic' or 'client_secret_post'")
        if client_secret is not None and not client_id:
            raise ConfigurationError("client_secret needs client_id")
        if cache_ttl < 0 or timeout <= 0 or max_cache_entries < 1:
            raise ConfigurationError("cache_ttl must not be negative; timeout and max_cache_entries positive")
        self.introspection_url = check_endpoint_url(introspection_url, "introspection_url")
        self.client_id = client_id
        self._client_secret = client_secret
        self.auth_method = auth_method
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self.max_cache_entries = max_cache_entries
        self.http_client = http_client
        self.clock: Callable[[], float] = time.monotonic
        # digest -> (digest, monotonic deadline, AccessToken fields without the token)
        self._cache: dict[bytes, tuple[bytes, float, dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"IntrospectionVerifier({self.introspection_url!r}, client_id={self.client_id!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = hashlib.sha256(token.encode()).digest()
        fields = self._cached(digest)
        if fields is None:
            try:
                answer = await self._introspect(token)
            except FetchError as error:
                logger.warning("token introspection at %s failed: %s", self.introspection_url, error)
                return None
            fields = _fields(answer)
            if fields is None:
                return None
            self._remember(digest, fields)
        return AccessToken(token=token, **copy.deepcopy(fields))

    async def _introspect(self, token: str) -> dict[str, Any]:
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {"accept": "application/json"}
        if self.client_id is not None:
            if self._client_secret is not None and self.auth_method == "client_secret_basic":
                # RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
                pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
                headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
            else:
                form["client_id"] = self.client_id
                if self._client_secret is not None:
                    form["client_secret"] = self._client_secret
        async with client_for(self.http_client, self.timeout) as client:
            return await get_json(client, "POST", self.introspection_url, self.timeout, data=form, headers=headers)

    def _cached(self, digest: bytes) -> dict[str, Any] | None:
        entry = self._cache.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        if self.clock() >= entry[1]:
            del self._cache[digest]
            return None
        return entry[2]

    def _remember(self, digest: bytes, fields: dict[str, Any]) -> None:
        if self.cache_ttl <= 0:
            return
        lifetime = self.cache_ttl
        expires_at = fields.get("expires_at")
        if expires_at is not None:
            lifetime = min(lifetime, expires_at - time.time())
        if lifetime <= 0:
            return
        now = self.clock()
        if len(self._cache) >= self.max_cache_entries:
            for key in [key for key, entry in self._cache.items() if now >= entry[1]]:
                del self._cache[key]
            while len(self._cache) >= self.max_cache_entries:
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = (digest, now + lifetime, fields)


def _fields(answer: dict[str, Any]) -> dict[str, Any] | None:
    """AccessToken fields (without the token) from an introspection answer; None if not valid now."""
    if answer.get("active") is not True:
        logger.debug("introspection: token is not active")
        return None
    now = time.time()
    exp, nbf = answer.get("exp"), answer.get("nbf")
    if exp is not None and (not _is_number(exp) or exp <= now):
        logger.debug("introspection: active but expired (or a malformed exp)")
        return None
    if nbf is not None and (not _is_number(nbf) or nbf > now):
        logger.debug("introspection: active but not yet valid (or a malformed nbf)")
        return None
    client_id = string_claim(answer, "client_id", "sub")
    if client_id is None:
        # Sessions are bound to (client_id, iss, sub); an answer naming no one cannot be bound.
        logger.warning("introspection answer names neither client_id nor sub; refusing the token")
        return None
    aud: Any = answer.get("aud")
    if isinstance(aud, list):
        aud = next((value for value in aud if isinstance(value, str)), None)  # pyright: ignore[reportUnknownVariableType]
    return {
        "client_id": client_id,
        "scopes": scopes_of(answer),
        "expires_at": int(exp) if exp is not None else None,
        "resource": aud if isinstance(aud, str) else None,
        "subject": string_claim(answer, "sub"),
        "claims": answer,
    }


def _is_number(value: object) -> bool:
    # bool is an int subclass, and NaN compares false with everything (it would never expire).
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value != float("inf")
