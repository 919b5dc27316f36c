"""Bearer authentication for the MCP endpoint (RFC 6750, RFC 9728, MCP authorization spec).

Pure pieces (header parsing, challenge building, metadata) and `BearerAuth`, which calls a token
verifier. Verifiers follow the SDK's `TokenVerifier` protocol (`async verify_token(token) ->
AccessToken | None`), so SDK and fastmcp verifiers plug in unchanged. Authentication runs before
the request body is read.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from mcp.server.auth.provider import AccessToken, principal_components

from .._core.errors import ProtocolError

__all__ = ["AuthenticationError", "TokenVerifier"]

WELL_KNOWN_PRM: Final = "/.well-known/oauth-protected-resource"


@runtime_checkable
class TokenVerifier(Protocol):
    """What verifies a bearer token: the SDK's `mcp.server.auth.provider.TokenVerifier` shape."""

    async def verify_token(self, token: str) -> AccessToken | None: ...


class AuthenticationError(ProtocolError):
    """401 (no or bad credentials) or 403 (insufficient scope), with its `WWW-Authenticate` challenge.

    The body is the OAuth error object (`{"error": ..., "error_description": ...}`), as the SDK's
    resource server answers, so clients that show it say something useful.
    """

    def __init__(self, status: int, error: str, description: str, challenge_value: str, *, reason: str) -> None:
        super().__init__(
            status,
            description,
            code=None,
            headers=[(b"www-authenticate", challenge_value.encode("latin-1", "replace"))],
            reason=reason,
        )
        self.error = error

    def error_body(self) -> Mapping[str, Any]:
        return {"error": self.error, "error_description": self.message}


def parse_bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when no credentials were sent.

    The scheme is case-insensitive and surrounding whitespace is tolerated. Any other scheme or a
    malformed value counts as no bearer credentials (RFC 6750 §3.1: the answer is a plain challenge).
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    # `str.split()` splits where `str.isspace()` holds (Unicode whitespace included), so one piece
    # means a non-empty token without inner whitespace, in C rather than a per-character loop.
    if scheme.lower() != "bearer" or len(pieces := token.split()) != 1:
        return None
    return pieces[0]


def _quote(value: str) -> str:
    # RFC 7230 quoted-string: escape backslash and double quote; drop control characters and
    # anything beyond ASCII (obs-text), so no byte a client sent (in Host, say) comes back raw.
    cleaned = "".join(ch for ch in value if ch == "\t" or " " <= ch <= "~")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    *,
    error: str | None = None,
    description: str | None = None,
    scopes: Sequence[str] = (),
    resource_metadata: str | None = None,
) -> str:
    """A `WWW-Authenticate: Bearer ...` value. No `error` when the request had no credentials."""
    params: list[str] = []
    if resource_metadata:
        params.append(f"resource_metadata={_quote(resource_metadata)}")
    if scopes:
        params.append(f"scope={_quote(' '.join(scopes))}")
    if error:
        params.append(f"error={_quote(error)}")
    if description:
        params.append(f"error_description={_quote(description)}")
    return "Bearer " + ", ".join(params) if params else "Bearer"


def canonical_resource(url: str) -> str:
    """RFC 8707 canonical form: lowercase scheme and host, no fragment, no trailing slash."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def metadata_paths(endpoint_path: str) -> tuple[str, str]:
    """Where RFC 9728 metadata is served: the root form and the path-suffixed form (tried first)."""
    suffix = "" if endpoint_path == "/" else endpoint_path
    return WELL_KNOWN_PRM, WELL_KNOWN_PRM + suffix


def principal_key(token: AccessToken) -> str:
    """The identity a session is bound to: the token's (client id, issuer, subject), as the SDK binds."""
    client_id, issuer, subject = principal_components(token)
    raw = "\x00".join((client_id, issuer or "", subject or ""))
    return "p:" + hashlib.sha256(raw.encode()).hexdigest()


class BearerAuth:
    """Authenticates requests with a token verifier and answers with precise challenges.

    Args:
        verifier: any object with `async verify_token(token) -> AccessToken | None`.
        required_scopes: scopes every request needs (403 `insufficient_scope` naming them otherwise).
        resource_url: the endpoint's public URL (RFC 8707 canonical form is derived from it).
        validate_resource: reject tokens whose `resource` (audience) does not name this endpoint.
        resource_metadata_url: advertised in challenges; defaults to the path-suffixed well-known URL.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        required_scopes: Sequence[str] = (),
        resource_url: str | None = None,
        validate_resource: bool = False,
        resource_metadata_url: str | None = None,
    ) -> None:
        self.verifier = verifier
        self.required_scopes = tuple(required_scopes)
        self.resource_url = resource_url
        self.validate_resource = validate_resource
        self.resource_metadata_url = resource_metadata_url
        self._canonical = canonical_resource(resource_url) if resource_url else None

    def unauthorized(self, error: str | None, description: str | None, metadata_url: str | None) -> AuthenticationError:
        value = challenge(
            error=error, description=description, scopes=self.required_scopes, resource_metadata=metadata_url
        )
        description = description or "Authentication required"
        return AuthenticationError(
            401, error or "invalid_token", description, value, reason=f"{error or 'no credentials'}: {description}"
        )

    def forbidden(self, missing: Sequence[str], metadata_url: str | None) -> AuthenticationError:
        value = challenge(
            error="insufficient_scope",
            description=f"Required scope: {' '.join(missing)}",
            scopes=self.required_scopes,
            resource_metadata=metadata_url,
        )
        return AuthenticationError(
            403, "insufficient_scope", f"Required scope: {' '.join(missing)}", value, reason="insufficient_scope"
        )

    async def authenticate(self, token: str | None, metadata_url: str | None) -> AccessToken:
        if token is None:
            raise self.unauthorized(None, None, metadata_url)
        access = await self.verifier.verify_token(token)
        if access is None:
            raise self.unauthorized("invalid_token", "The access token is invalid", metadata_url)
        return self.check(access, metadata_url)

    def check(self, access: AccessToken, metadata_url: str | None) -> AccessToken:
        if access.expires_at is not None and access.expires_at < time.time():
            raise self.unauthorized("invalid_token", "The access token has expired", metadata_url)
        if self.validate_resource and self._canonical is not None:
            audience = access.resource
            if audience is None or canonical_resource(audience) != self._canonical:
                raise self.unauthorized("invalid_token", "The access token is not for this resource", metadata_url)
        missing = [scope for scope in self.required_scopes if scope not in access.scopes]
        if missing:
            raise self.forbidden(missing, metadata_url)
        return access


def protected_resource_metadata(
    resource: str,
    authorization_servers: Sequence[str],
    scopes_supported: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """RFC 9728 metadata with `resource` naming the MCP endpoint itself."""
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if scopes_supported:
        # 2026-07-28: offline_access is not advertised by resource servers.
        document["scopes_supported"] = [s for s in scopes_supported if s != "offline_access"]
    if extra:
        document.update(extra)
    return document
