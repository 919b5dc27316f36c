"""Signing keys for `JWTVerifier`: a static set, or a JWKS URL fetched and cached.

The remote set follows what keeps an IdP outage or key rotation from becoming an outage here:
keys are cached for `ttl` seconds; a token naming an unknown `kid` triggers a refetch (a rotation),
at most once per `cooldown` seconds (garbage `kid`s must not turn into a request flood to the
IdP); a failed fetch keeps the last good keys. joserfc is imported by the caller first, so the
local imports below cannot fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import anyio
import httpx2

from .._core.errors import ConfigurationError
from .oauth_http import FetchError, client_for, get_json

if TYPE_CHECKING:
    from joserfc.jwk import Key

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.auth")

StaticKeys: TypeAlias = "Mapping[str, Any] | str | bytes | Sequence[Mapping[str, Any] | str | bytes]"
"""A JWK set (`{"keys": [...]}`), one JWK, a PEM public key, or a list of JWKs and PEM keys."""


def key_type_for(alg: str) -> str | None:
    """The JWK `kty` an algorithm verifies with. Matching it first means an RSA public key can
    never be used as an HMAC secret (the classic algorithm-confusion forgery)."""
    if alg.startswith(("RS", "PS")):
        return "RSA"
    if alg.startswith("ES"):
        return "EC"
    if alg.startswith("HS"):
        return "oct"
    if alg in ("EdDSA", "Ed25519", "Ed448"):
        return "OKP"
    return None


def matching(keys: Sequence[Key], kid: str | None, alg: str) -> list[Key]:
    """The keys that may verify a token with this `kid` and `alg`.

    A key without a `kid` matches any token (a lone PEM key has none); a token without a `kid` is
    tried against every key of the right type.
    """
    kty = key_type_for(alg)
    return [
        key
        for key in keys
        if key.key_type == kty
        and (kid is None or key.kid is None or key.kid == kid)
        and key.get("use") in (None, "sig")
        and key.get("alg") in (None, alg)
    ]


def import_static(keys: StaticKeys) -> list[Key]:
    """Keys given in configuration; `ConfigurationError` for any that cannot be read."""
    from joserfc.errors import JoseError
    from joserfc.jwk import import_key

    items: list[Mapping[str, Any] | str | bytes]
    if isinstance(keys, (str, bytes)):
        items = [keys]
    elif isinstance(keys, Mapping):
        listed = keys.get("keys")
        items = list(listed) if isinstance(listed, list) else [keys]  # pyright: ignore[reportUnknownArgumentType]
    else:
        items = list(keys)
    try:
        # A JWK's own `kty` decides its type; an `oct` JWK is how a symmetric key is given, explicitly.
        imported = [import_key(dict(item)) if isinstance(item, Mapping) else _import_pem(item) for item in items]
    except (JoseError, ValueError, TypeError) as error:
        raise ConfigurationError(f"cannot read a verification key: {error}") from None
    if not imported:
        raise ConfigurationError("no verification keys given")
    return imported


def _import_pem(data: str | bytes) -> Key:
    # Each asymmetric type explicitly: joserfc would read unparseable text as an HMAC secret.
    kinds: tuple[Literal["RSA", "EC", "OKP"], ...] = ("RSA", "EC", "OKP")
    for kty in kinds:
        key = _import_as(data, kty)
        if key is not None:
            return key
    raise ConfigurationError("a PEM verification key must be an RSA, EC or OKP public key")


def _import_as(data: str | bytes, kty: Literal["RSA", "EC", "OKP"]) -> Key | None:
    from joserfc.errors import InvalidKeyTypeError
    from joserfc.jwk import import_key

    try:
        return import_key(data, kty)
    except InvalidKeyTypeError:
        return None


class KeySource(Protocol):
    async def candidates(self, kid: str | None, alg: str) -> list[Key]: ...


class StaticKeySource:
    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys

    async def candidates(self, kid: str | None, alg: str) -> list[Key]:
        return matching(self.keys, kid, alg)


class RemoteKeySource:
    """A JWKS URL's keys, cached; see the module docstring for the refetch rules."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        cooldown: float,
        timeout: float,
        client: httpx2.AsyncClient | None,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.cooldown = cooldown
        self.timeout = timeout
        self.client = client
        self.clock: Callable[[], float] = time.monotonic
        self.keys: list[Key] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._inflight: anyio.Event | None = None

    async def candidates(self, kid: str | None, alg: str) -> list[Key]:
        if self._stale(self.clock()):
            await self._refresh(self._stale)
        found = matching(self.keys, kid, alg)
        if not found and kid is not None:
            await self._refresh(lambda _now: not matching(self.keys, kid, alg))
            found = matching(self.keys, kid, alg)
        return found

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.ttl

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.cooldown

    async def _refresh(self, needed: Callable[[float], bool]) -> None:
        now = self.clock()
        if not needed(now):
            return
        # One fetch serves every task that needs it. An Event made per fetch rather than a lock
        # made once: the verifier may outlive the event loop (or backend) it first ran on.
        inflight = self._inflight
        if inflight is not None:
            await inflight.wait()
            return
        if not self._may_fetch(now):
            return
        done = self._inflight = anyio.Event()
        self._attempted_at = now
        try:
            self.keys = await self._fetch()
            self._fetched_at = now
            logger.debug("fetched %d signing keys from %s", len(self.keys), self.url)
        except FetchError as error:
            logger.warning("JWKS fetch from %s failed (%s); keeping %d last good keys", self.url, error, len(self.keys))
        finally:
            self._inflight = None
            done.set()

    async def _fetch(self) -> list[Key]:
        from joserfc.errors import JoseError
        from joserfc.jwk import import_key

        async with client_for(self.client, self.timeout) as client:
            document = await get_json(client, "GET", self.url, self.timeout, headers={"accept": "application/json"})
        entries: Any = document.get("keys")
        if not isinstance(entries, list):
            raise FetchError("the JWKS document has no `keys` array")
        keys: list[Key] = []
        for entry in entries:  # pyright: ignore[reportUnknownVariableType]
            # A published symmetric key would let anyone who reads the JWKS sign tokens.
            if not isinstance(entry, dict) or entry.get("kty") == "oct":  # pyright: ignore[reportUnknownMemberType]
                continue
            try:
                keys.append(import_key(entry))  # pyright: ignore[reportUnknownArgumentType]
            except (JoseError, ValueError, TypeError) as error:
                # RFC 7517 §5: skip a key that cannot be used, keep the rest of the set.
                logger.debug("skipping an unusable key in the JWKS from %s: %s", self.url, error)
        if not keys:
            raise FetchError("the JWKS document has no usable signing keys")
        return keys
