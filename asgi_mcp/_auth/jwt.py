"""`JWTVerifier`: verifies JWT access tokens (RFC 9068 style) locally, with joserfc.

joserfc is an optional dependency (`pip install 'asgi-mcp[jwt]'`); it is imported when a verifier
is built, so importing asgi_mcp never needs it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import httpx2
from mcp.server.auth.provider import AccessToken

from .._core.errors import ConfigurationError
from .jwks import KeySource, RemoteKeySource, StaticKeys, StaticKeySource, import_static, key_type_for
from .oauth_http import check_endpoint_url, scopes_of, string_claim

if TYPE_CHECKING:
    from joserfc.jws import CompactSignature

__all__ = ["JWTVerifier"]

logger = logging.getLogger("asgi_mcp.auth")


class _Rejected(Exception):
    """Why a token is refused; logged at DEBUG, never shown to the caller, never holds the token."""


def _require_joserfc() -> None:
    try:
        import joserfc  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        raise ConfigurationError("JWTVerifier needs joserfc: pip install 'asgi-mcp[jwt]'") from None


class JWTVerifier:
    """Verifies signed JWT access tokens against an issuer's keys.

    Args:
        jwks_url: the issuer's JWKS endpoint (https, or http to a loopback host). Give this or `keys`.
        keys: static verification keys: a JWK set, one JWK, a PEM public key, or a list of them. An
            `oct` JWK (a shared secret) is the only way to allow HS256/384/512.
        issuer: the exact `iss` tokens must carry.
        audience: the `aud` value(s) accepted; a token must name at least one. Use the MCP
            endpoint's URL (RFC 8707), which is what `McpApp(validate_resource=True)` checks too.
        algorithms: the signature algorithms accepted (`alg`); `none` never is.
        leeway: seconds of clock skew tolerated for `exp`, `nbf` and `iat`.
        required_scopes: scopes a token must carry to be valid at all (None for a token lacking
            one). Prefer `McpApp(required_scopes=...)`, which answers 403 `insufficient_scope`.
        jwks_cache_ttl: seconds fetched keys are used before they are fetched again.
        unknown_kid_cooldown: seconds between refetches triggered by a token naming an unknown
            key id (and between retries after a failed fetch).
        timeout: seconds a JWKS fetch may take in all.
        http_client: an `httpx2.AsyncClient` to fetch with (connection pooling); by default each
            fetch uses a short-lived client.

    `verify_token` returns None for any token that is not valid (never raises for a bad token) and
    logs why at DEBUG on `asgi_mcp.auth`, without the token. The `AccessToken` it returns has
    `client_id` from `azp`, `client_id` or `sub`; `scopes` from `scope` (space-separated) or `scp`;
    `expires_at` from `exp`; `resource` the accepted audience; `subject` from `sub`; all claims.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        keys: StaticKeys | None = None,
        issuer: str,
        audience: str | Sequence[str],
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway: int = 30,
        required_scopes: Sequence[str] = (),
        jwks_cache_ttl: float = 300.0,
        unknown_kid_cooldown: float = 30.0,
        timeout: float = 5.0,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        _require_joserfc()
        from joserfc.jws import JWSRegistry
        from joserfc.jwt import JWTClaimsRegistry

        if (jwks_url is None) == (keys is None):
            raise ConfigurationError("give exactly one of `jwks_url` and `keys`")
        if not issuer:
            raise ConfigurationError("`issuer` is required: tokens from any other issuer must be refused")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(audiences):
            raise ConfigurationError("`audience` must name at least one audience (RFC 8707: this endpoint)")
        if leeway < 0 or jwks_cache_ttl < 0 or unknown_kid_cooldown < 0 or timeout <= 0:
            raise ConfigurationError(
                "leeway, jwks_cache_ttl and unknown_kid_cooldown must not be negative; timeout must be positive"
            )
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.required_scopes = tuple(required_scopes)
        self._keys: KeySource
        if keys is not None:
            static = import_static(keys)
            self._keys = StaticKeySource(static)
            has_secret = any(key.key_type == "oct" for key in static)
        else:
            assert jwks_url is not None
            self._keys = RemoteKeySource(
                check_endpoint_url(jwks_url, "jwks_url"),
                ttl=jwks_cache_ttl,
                cooldown=unknown_kid_cooldown,
                timeout=timeout,
                client=http_client,
            )
            has_secret = False  # fetched `oct` keys are discarded
        self.algorithms = _check_algorithms(algorithms, JWSRegistry.algorithms, has_secret=has_secret)
        # Unknown non-critical header parameters are ignored, as RFC 7515 §4 asks.
        self._registry = JWSRegistry(algorithms=list(self.algorithms), strict_check_header=False)
        self._claims = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "values": list(self.audiences)},
            exp={"essential": True},
        )

    def __repr__(self) -> str:
        return f"JWTVerifier(issuer={self.issuer!r}, audience={list(self.audiences)!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await self._verified_claims(token)
            return self._access_token(token, claims)
        except _Rejected as why:
            logger.debug("bearer token rejected: %s", why)
            return None

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        from joserfc.errors import JoseError
        from joserfc.jws import extract_compact

        try:
            signed = extract_compact(token.encode(), registry=self._registry)
        except (JoseError, ValueError) as error:
            raise _Rejected(f"malformed JWS: {error}") from None
        raw_header: Any = signed.headers()
        if not isinstance(raw_header, dict):
            raise _Rejected("the JOSE header is not an object")
        header = cast("dict[str, Any]", raw_header)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _Rejected(f"algorithm {alg!r} is not allowed")
        # No JWS extension is understood here, so a critical one (RFC 7515 §4.1.11) means refusal;
        # `b64` (RFC 7797) would change what the signature covers.
        if "crit" in header or "b64" in header:
            raise _Rejected("the header uses a JWS extension (crit/b64)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _Rejected("kid is not a string")
        keys = await self._keys.candidates(kid, alg)
        if not keys:
            raise _Rejected(f"no {key_type_for(alg)} key for kid {kid!r}")
        if not any(self._signature_valid(signed, key) for key in keys):
            raise _Rejected("bad signature")
        try:
            claims: Any = json.loads(signed.payload)
        except ValueError:
            raise _Rejected("the payload is not JSON") from None
        if not isinstance(claims, dict):
            raise _Rejected("the payload is not a JSON object")
        try:
            self._claims.validate(claims)  # pyright: ignore[reportUnknownArgumentType]
        except JoseError as error:
            raise _Rejected(f"claims: {error}") from None
        return claims  # pyright: ignore[reportUnknownVariableType]

    def _signature_valid(self, signed: CompactSignature, key: Any) -> bool:
        from joserfc.errors import JoseError
        from joserfc.jws import validate_compact

        try:
            return validate_compact(signed, key, registry=self._registry)
        except (JoseError, ValueError) as error:
            logger.debug("signature check failed: %s", error)
            return False

    def _access_token(self, token: str, claims: dict[str, Any]) -> AccessToken:
        scopes = scopes_of(claims)
        missing = [scope for scope in self.required_scopes if scope not in scopes]
        if missing:
            raise _Rejected(f"missing required scopes {missing}")
        client_id = string_claim(claims, "azp", "client_id", "sub")
        if client_id is None:
            raise _Rejected("no azp, client_id or sub claim")
        aud: Any = claims["aud"]
        token_audiences: list[Any] = [aud] if isinstance(aud, str) else aud
        # The audience this endpoint accepted, even when the token names others first.
        resource = next(value for value in token_audiences if value in self.audiences)
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(claims["exp"]),
            resource=resource,
            subject=string_claim(claims, "sub"),
            claims=claims,
        )


def _check_algorithms(algorithms: Sequence[str], known: dict[str, Any], *, has_secret: bool) -> tuple[str, ...]:
    chosen = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
    if not chosen:
        raise ConfigurationError("`algorithms` must allow at least one signature algorithm")
    for alg in chosen:
        if alg.lower() == "none":
            raise ConfigurationError('the "none" algorithm means unsigned tokens; it is never allowed')
        if alg not in known or key_type_for(alg) is None:
            raise ConfigurationError(f"unknown JWS algorithm {alg!r}")
        if key_type_for(alg) == "oct" and not has_secret:
            raise ConfigurationError(
                f"{alg} needs a shared secret: give it explicitly as an `oct` JWK in `keys` (never from a JWKS URL)"
            )
    return chosen
