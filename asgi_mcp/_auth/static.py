"""`StaticTokenVerifier`: a fixed set of bearer tokens, for development, tests and service accounts.

Only SHA-256 digests of the tokens are kept, so a memory dump or a repr shows no credential, and
they are compared in constant time.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.provider import AccessToken
from pydantic import ValidationError

from .._core.errors import ConfigurationError

__all__ = ["StaticTokenVerifier"]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticTokenVerifier:
    """Verifies tokens against a fixed mapping of token -> grant.

    Args:
        tokens: each token and what it grants: an `AccessToken` (its `token` field is ignored), or a
            dict of its fields (`client_id` required; `scopes`, `expires_at`, `resource`, `subject`,
            `claims` optional).

    `verify_token` returns a fresh `AccessToken` per call (callers may mutate it), or None for an
    unknown or expired token.
    """

    def __init__(self, tokens: Mapping[str, AccessToken | Mapping[str, Any]]) -> None:
        self._grants: dict[bytes, tuple[bytes, dict[str, Any]]] = {}
        for token, grant in tokens.items():
            if not token or any(ch.isspace() for ch in token):
                raise ConfigurationError("a bearer token must be non-empty and contain no whitespace")
            fields: dict[str, Any] = grant.model_dump() if isinstance(grant, AccessToken) else {"scopes": [], **grant}
            # The plaintext token is never kept; it is put back from the request on each match.
            fields.pop("token", None)
            try:
                AccessToken(token="-", **fields)
            except ValidationError as error:
                # The message names the field, never the token (the mapping key is not in it).
                raise ConfigurationError(f"invalid grant for a static token: {error}") from None
            digest = _digest(token)
            self._grants[digest] = (digest, fields)

    def __repr__(self) -> str:
        return f"StaticTokenVerifier(<{len(self._grants)} tokens>)"

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = _digest(token)
        entry = self._grants.get(digest)
        # The lookup hashes the digest, not the token; comparing the stored digest in constant time
        # keeps the match itself free of timing differences, as `Tenants` does.
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        fields = entry[1]
        expires_at = fields.get("expires_at")
        if expires_at is not None and expires_at < time.time():
            return None
        return AccessToken(token=token, **copy.deepcopy(fields))
