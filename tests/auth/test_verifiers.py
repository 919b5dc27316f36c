"""The shipped token verifiers, against real endpoints on 127.0.0.1.

A tiny identity provider (an ASGI app serving a JWKS and an RFC 7662 introspection endpoint) runs
in-process: uvicorn on asyncio, hypercorn's Trio worker on Trio. Tokens are really signed (RSA and
EC keys generated once per run). Time-dependent caches are driven by a fake monotonic clock, so
nothing sleeps; token lifetimes (`exp`, `nbf`) are set relative to the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qs

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server.auth.provider import AccessToken

from asgi_mcp import ConfigurationError, IntrospectionVerifier, JWTVerifier, McpApp, StaticTokenVerifier
from tests.kit.mcp_servers import build_server
from tests.kit.messages import LEGACY, call_tool, initialize, notification

pytest.importorskip("joserfc")

from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

ISSUER: Final = "https://idp.example/"
AUDIENCE: Final = "https://mcp.example/mcp"
CLIENT_ID: Final = "resource-server"
CLIENT_SECRET: Final = "s3cret with spaces&symbols"

RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
ROTATED_KEY = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
STRANGER_KEY = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})  # same kid, not the IdP's key


def jwks(*keys: RSAKey | ECKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(
    key: RSAKey | ECKey | OctKey = RSA_KEY,
    *,
    alg: str = "RS256",
    header: dict[str, Any] | None = None,
    expires_in: float | None = 300,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "azp": "client-a",
        "scope": "mcp:tools mcp:read",
        "iat": now,
    }
    if expires_in is not None:
        body["exp"] = now + int(expires_in)
    body.update(claims)
    for name in drop:
        body.pop(name, None)
    protected = {"alg": alg, **({"kid": key.kid} if key.kid else {}), **(header or {})}
    return jose_jwt.encode(protected, body, key, algorithms=[alg])


def unsigned(**claims: Any) -> str:
    """An `alg: none` token: what an attacker sends hoping the verifier skips the signature."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "azp": "client-a", "exp": now + 300, **claims}
    return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}."


# -- the identity provider ------------------------------------------------------------------------


@dataclass
class IdP:
    """JWKS at /jwks, RFC 7662 introspection at /introspect (client authentication required)."""

    jwks: dict[str, Any] = field(default_factory=lambda: jwks(RSA_KEY, EC_KEY))
    jwks_status: int = 200
    jwks_hits: int = 0
    active: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> introspection answer
    introspection_status: int = 200
    introspections: list[dict[str, Any]] = field(default_factory=list)  # what each request carried

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]  # startup / shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/jwks" and scope["method"] == "GET":
            self.jwks_hits += 1
            await self._send(send, self.jwks_status, self.jwks if self.jwks_status == 200 else {"error": "down"})
        elif scope["path"] == "/introspect" and scope["method"] == "POST":
            await self._introspect(scope, body, send)
        else:
            await self._send(send, 404, {"error": "not_found"})

    async def _introspect(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        self.introspections.append({"form": form, "authorization": headers.get("authorization")})
        if self.introspection_status != 200:
            await self._send(send, self.introspection_status, {"error": "down"})
            return
        expected = "Basic " + base64.b64encode(b"resource-server:s3cret+with+spaces%26symbols").decode()
        by_basic = headers.get("authorization") == expected
        by_post = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        if not (by_basic or by_post):
            await self._send(send, 401, {"error": "invalid_client"})
            return
        await self._send(send, 200, self.active.get(form.get("token", ""), {"active": False}))

    @staticmethod
    async def _send(send: Any, status: int, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class FakeClock:
    """A monotonic clock the test moves by hand (the verifiers' cache clocks)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- serving over 127.0.0.1 -----------------------------------------------------------------------


def listening_socket() -> tuple[socket.socket, int]:
    """A bound, listening socket: its port is known before the app is built, and connections made
    before the server accepts wait in the backlog (no readiness polling)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock, sock.getsockname()[1]


@asynccontextmanager
async def serving(app: Any, sock: socket.socket, backend: str) -> AsyncIterator[None]:
    """Serve `app` on `sock` until the block exits: uvicorn on asyncio, hypercorn on Trio."""
    if backend == "trio":
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn takes the descriptor over
        config.accesslog = None
        config.graceful_timeout = 1
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait, task_status=task_status))
            try:
                yield
            finally:
                stop.set()
        return

    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Any:  # the test process keeps its own signal handlers
            yield

    lifespan: Literal["on", "off"] = "on" if isinstance(app, McpApp) else "off"
    server = Server(uvicorn.Config(app, lifespan=lifespan, log_config=None, timeout_graceful_shutdown=1))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            try:
                yield
            finally:
                server.should_exit = True
    finally:
        sock.close()


@pytest.fixture
async def idp(anyio_backend: str) -> AsyncIterator[tuple[IdP, str]]:
    """The identity provider, served; yields it and its base URL."""
    provider = IdP()
    sock, port = listening_socket()
    async with serving(provider, sock, anyio_backend):
        yield provider, f"http://127.0.0.1:{port}"


def jwt_verifier(base: str, clock: FakeClock | None = None, **options: Any) -> JWTVerifier:
    options.setdefault("issuer", ISSUER)
    options.setdefault("audience", AUDIENCE)
    verifier = JWTVerifier(jwks_url=f"{base}/jwks", **options)
    if clock is not None:
        verifier._keys.clock = clock  # type: ignore[attr-defined]
    return verifier


# -- StaticTokenVerifier ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_static_verifier_returns_a_fresh_token_per_call() -> None:
    verifier = StaticTokenVerifier(
        {
            "tok-a": {"client_id": "a", "scopes": ["mcp:tools"], "claims": {"iss": "local"}},
            "tok-b": AccessToken(token="ignored", client_id="b", scopes=[], subject="svc"),
        }
    )
    first = await verifier.verify_token("tok-a")
    assert first is not None
    assert first.token == "tok-a"
    assert first.client_id == "a"
    assert first.scopes == ["mcp:tools"]
    first.scopes.append("admin")
    assert first.claims is not None
    first.claims["iss"] = "forged"
    again = await verifier.verify_token("tok-a")
    assert again is not None
    assert again.scopes == ["mcp:tools"]
    assert again.claims == {"iss": "local"}
    second = await verifier.verify_token("tok-b")
    assert second is not None
    assert (second.token, second.client_id, second.subject) == ("tok-b", "b", "svc")
    assert await verifier.verify_token("tok-c") is None
    assert await verifier.verify_token("tok-a ") is None


@pytest.mark.anyio
async def test_static_verifier_keeps_only_digests_and_refuses_expired_tokens() -> None:
    verifier = StaticTokenVerifier(
        {"live-token-123": {"client_id": "a"}, "old-token-456": {"client_id": "b", "expires_at": int(time.time()) - 1}}
    )
    dump = repr(verifier) + repr(vars(verifier))
    assert "live-token-123" not in dump
    assert "old-token-456" not in dump
    assert await verifier.verify_token("old-token-456") is None
    assert await verifier.verify_token("live-token-123") is not None


def test_static_verifier_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="whitespace"):
        StaticTokenVerifier({"has space": {"client_id": "a"}})
    with pytest.raises(ConfigurationError, match="client_id") as raised:
        StaticTokenVerifier({"secret-value": {"scopes": []}})
    assert "secret-value" not in str(raised.value)


# -- JWTVerifier: claims and signatures ------------------------------------------------------------


@pytest.mark.anyio
async def test_valid_tokens_map_to_access_tokens(idp: tuple[IdP, str]) -> None:
    _, base = idp
    verifier = jwt_verifier(base)
    for key, alg in ((RSA_KEY, "RS256"), (EC_KEY, "ES256")):
        token = mint(key, alg=alg)
        access = await verifier.verify_token(token)
        assert access is not None, alg
        assert access.token == token
        assert access.client_id == "client-a"
        assert access.subject == "user-1"
        assert access.scopes == ["mcp:tools", "mcp:read"]
        assert access.resource == AUDIENCE
        assert access.claims is not None
        assert access.claims["iss"] == ISSUER
        assert access.expires_at == access.claims["exp"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims", "drop", "client_id", "scopes"),
    [
        ({"client_id": "cid"}, ("azp",), "cid", ["mcp:tools", "mcp:read"]),
        ({}, ("azp",), "user-1", ["mcp:tools", "mcp:read"]),
        ({"scp": ["a", "b"]}, ("scope",), "client-a", ["a", "b"]),
        ({"scp": "a b"}, ("scope",), "client-a", ["a", "b"]),
        ({}, ("scope",), "client-a", []),
    ],
)
async def test_client_id_and_scope_claims(
    idp: tuple[IdP, str], claims: dict[str, Any], drop: tuple[str, ...], client_id: str, scopes: list[str]
) -> None:
    verifier = jwt_verifier(idp[1])
    access = await verifier.verify_token(mint(drop=drop, **claims))
    assert access is not None
    assert access.client_id == client_id
    assert access.scopes == scopes


@pytest.mark.anyio
async def test_audience_lists(idp: tuple[IdP, str]) -> None:
    verifier = jwt_verifier(idp[1], audience=[AUDIENCE, "https://other.example/mcp"])
    access = await verifier.verify_token(mint(aud=["https://unrelated.example", AUDIENCE]))
    assert access is not None
    assert access.resource == AUDIENCE
    assert await verifier.verify_token(mint(aud=["https://unrelated.example"])) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("why", "token"),
    [
        ("wrong issuer", lambda: mint(iss="https://evil.example/")),
        ("wrong audience", lambda: mint(aud="https://other.example/mcp")),
        ("expired", lambda: mint(expires_in=-120)),
        ("no exp", lambda: mint(expires_in=None)),
        ("nbf in the future", lambda: mint(nbf=int(time.time()) + 120)),
        ("iat in the future", lambda: mint(iat=int(time.time()) + 120)),
        ("no client id at all", lambda: mint(drop=("azp", "sub"))),
        ("alg not allowed (RS384)", lambda: mint(alg="RS384")),
        ("alg not allowed (PS256)", lambda: mint(alg="PS256")),
        ("alg none", lambda: unsigned()),
        ("alg none, no kid, empty signature", lambda: unsigned(scope="admin")),
        ("critical extension", lambda: mint(header={"crit": ["kid"]})),
        ("signed by another key with the same kid", lambda: mint(STRANGER_KEY)),
        ("ES256 header on an RSA signature", lambda: _swap_alg(mint(), "ES256")),
        ("tampered signature", lambda: _tamper_signature(mint())),
        ("tampered payload", lambda: _tamper_payload(mint(scope="mcp:read"), scope="mcp:tools admin")),
        ("HS256 signed with the public key (algorithm confusion)", lambda: _confused()),
        ("not a JWT", lambda: "not-a-jwt"),
        ("JWE-shaped", lambda: "a.b.c.d.e"),
        ("empty", lambda: ""),
    ],
)
async def test_invalid_tokens_are_refused(idp: tuple[IdP, str], why: str, token: Callable[[], str]) -> None:
    verifier = jwt_verifier(idp[1], algorithms=["RS256", "ES256"])
    assert await verifier.verify_token(token()) is None, why


@pytest.mark.anyio
async def test_leeway_tolerates_small_clock_skew(idp: tuple[IdP, str]) -> None:
    verifier = jwt_verifier(idp[1], leeway=30)
    assert await verifier.verify_token(mint(expires_in=-10)) is not None
    assert await verifier.verify_token(mint(nbf=int(time.time()) + 10)) is not None
    strict = jwt_verifier(idp[1], leeway=0)
    assert await strict.verify_token(mint(expires_in=-10)) is None


@pytest.mark.anyio
async def test_required_scopes_on_the_verifier(idp: tuple[IdP, str]) -> None:
    verifier = jwt_verifier(idp[1], required_scopes=["mcp:tools"])
    assert await verifier.verify_token(mint(scope="mcp:tools")) is not None
    assert await verifier.verify_token(mint(scope="mcp:read")) is None


@pytest.mark.anyio
async def test_rejections_are_logged_at_debug_without_the_token(
    idp: tuple[IdP, str], caplog: pytest.LogCaptureFixture
) -> None:
    verifier = jwt_verifier(idp[1])
    token = mint(iss="https://evil.example/")
    with caplog.at_level(logging.DEBUG, logger="asgi_mcp.auth"):
        assert await verifier.verify_token(token) is None
    records = [r for r in caplog.records if r.name == "asgi_mcp.auth"]
    assert records
    assert all(r.levelno == logging.DEBUG for r in records)
    assert "iss" in caplog.text
    for part in token.split("."):
        assert part not in caplog.text


def _swap_alg(token: str, alg: str) -> str:
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=="))
    return f"{b64(json.dumps({**decoded, 'alg': alg}).encode())}.{payload}.{signature}"


def _tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(raw))}"


def _tamper_payload(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return f"{header}.{b64(json.dumps({**claims, **changes}).encode())}.{signature}"


def _confused() -> str:
    """HS256 keyed with the RSA public key's PEM: forged if a verifier lets `alg` pick the key use.

    Signed by hand: joserfc itself refuses to make an HMAC key of a public key.
    """
    now = int(time.time())
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "azp": "client-a", "exp": now + 300}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(RSA_KEY.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


# -- JWTVerifier: static keys and configuration ----------------------------------------------------


@pytest.mark.anyio
async def test_static_keys_pem_jwk_and_explicit_secret() -> None:
    by_pem = JWTVerifier(keys=RSA_KEY.as_pem(private=False).decode(), issuer=ISSUER, audience=AUDIENCE)
    assert await by_pem.verify_token(mint()) is not None
    assert await by_pem.verify_token(mint(EC_KEY, alg="ES256")) is None
    by_jwk = JWTVerifier(keys=EC_KEY.as_dict(private=False), issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"])
    assert await by_jwk.verify_token(mint(EC_KEY, alg="ES256")) is not None
    assert await by_jwk.verify_token(mint()) is None  # RS256 is not in this allow-list
    secret = OctKey.generate_key(256, parameters={"kid": "hmac"})
    by_secret = JWTVerifier(keys=jwks_with(secret), issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"])
    assert await by_secret.verify_token(mint(secret, alg="HS256")) is not None
    assert await by_secret.verify_token(_confused()) is None


def jwks_with(secret: OctKey) -> dict[str, Any]:
    return {"keys": [secret.as_dict(private=True), RSA_KEY.as_dict(private=False)]}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keys": None}, "exactly one"),
        ({"jwks_url": "https://idp.example/jwks"}, "exactly one"),
        ({"algorithms": ["none"]}, "never allowed"),
        ({"algorithms": ["HS256"]}, "shared secret"),
        ({"algorithms": ["XX256"]}, "unknown"),
        ({"algorithms": []}, "at least one"),
        ({"audience": []}, "audience"),
        ({"issuer": ""}, "issuer"),
        ({"keys": "not a key"}, "verification key"),
        ({"leeway": -1}, "negative"),
    ],
)
def test_jwt_configuration_errors(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"keys": RSA_KEY.as_dict(private=False), "issuer": ISSUER, "audience": AUDIENCE}
    arguments.update(options)
    if arguments["keys"] is None:
        del arguments["keys"]
    with pytest.raises(ConfigurationError, match=message):
        JWTVerifier(**arguments)


def test_endpoints_must_be_https_unless_loopback() -> None:
    with pytest.raises(ConfigurationError, match="https"):
        JWTVerifier(jwks_url="http://idp.example/jwks", issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ConfigurationError, match="HS256"):
        JWTVerifier(jwks_url="https://idp.example/jwks", issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"])
    with pytest.raises(ConfigurationError, match="https"):
        IntrospectionVerifier("http://idp.example/introspect")
    JWTVerifier(jwks_url="http://localhost:1/jwks", issuer=ISSUER, audience=AUDIENCE)
    IntrospectionVerifier("http://[::1]:1/introspect")


def test_missing_joserfc_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "joserfc", None)  # what an uninstalled package looks like to import
    with pytest.raises(ConfigurationError, match=r"asgi-mcp\[jwt\]"):
        JWTVerifier(keys=RSA_KEY.as_dict(private=False), issuer=ISSUER, audience=AUDIENCE)


_JSONISH = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.lists(st.text(max_size=4)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(
        st.dictionaries(st.sampled_from(["alg", "kid", "crit", "b64", "typ", "jku", "x5c"]), _JSONISH),
        _JSONISH,
    ),
    payload=st.one_of(
        st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "azp", "scope", "scp"]), _JSONISH),
        _JSONISH,
    ),
    signature=st.binary(max_size=64),
    garbage=st.text(max_size=40),
)
def test_malformed_tokens_never_raise(header: Any, payload: Any, signature: bytes, garbage: str) -> None:
    verifier = _FUZZ_VERIFIER
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"
    for candidate in (token, garbage, token + garbage):
        anyio.run(_expect_refused_or_valid, verifier, candidate)


_FUZZ_VERIFIER = JWTVerifier(keys=jwks(RSA_KEY, EC_KEY), issuer=ISSUER, audience=AUDIENCE)


async def _expect_refused_or_valid(verifier: JWTVerifier, token: str) -> None:
    access = await verifier.verify_token(token)
    assert access is None or access.client_id == "client-a"


# -- JWTVerifier: the JWKS cache ------------------------------------------------------------------


@pytest.mark.anyio
async def test_keys_are_fetched_once_and_cached(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    clock = FakeClock()
    verifier = jwt_verifier(base, clock, jwks_cache_ttl=300)
    results: list[AccessToken | None] = []

    async def verify() -> None:
        results.append(await verifier.verify_token(mint()))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(verify)
    assert len(results) == 10
    assert all(result is not None for result in results)
    assert provider.jwks_hits == 1  # concurrent first verifications share one fetch
    clock.advance(299)
    assert await verifier.verify_token(mint(EC_KEY, alg="ES256")) is not None
    assert provider.jwks_hits == 1
    clock.advance(1)
    assert await verifier.verify_token(mint()) is not None
    assert provider.jwks_hits == 2  # the TTL passed


@pytest.mark.anyio
async def test_unknown_kid_refetches_once_then_cools_down(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    clock = FakeClock()
    verifier = jwt_verifier(base, clock, unknown_kid_cooldown=30)
    assert await verifier.verify_token(mint()) is not None
    assert provider.jwks_hits == 1
    # The cooldown counts from the last fetch of any kind (as panva/jose's remote JWK set does).
    assert await verifier.verify_token(mint(ROTATED_KEY)) is None
    assert provider.jwks_hits == 1
    clock.advance(30)
    assert await verifier.verify_token(mint(ROTATED_KEY)) is None  # rsa-2 is not published
    assert provider.jwks_hits == 2
    for _ in range(5):
        assert await verifier.verify_token(mint(ROTATED_KEY, header={"kid": "garbage"})) is None
    assert provider.jwks_hits == 2  # within the cooldown: no request flood to the IdP
    provider.jwks = jwks(RSA_KEY, EC_KEY, ROTATED_KEY)  # the IdP rotates
    clock.advance(29)
    assert await verifier.verify_token(mint(ROTATED_KEY)) is None
    clock.advance(1)
    assert await verifier.verify_token(mint(ROTATED_KEY)) is not None
    assert provider.jwks_hits == 3
    assert await verifier.verify_token(mint()) is not None  # the old key is still published
    assert provider.jwks_hits == 3


@pytest.mark.anyio
async def test_rotation_is_picked_up_by_a_new_kid(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    clock = FakeClock()
    verifier = jwt_verifier(base, clock)
    assert await verifier.verify_token(mint()) is not None
    provider.jwks = jwks(ROTATED_KEY)
    clock.advance(30)
    assert await verifier.verify_token(mint(ROTATED_KEY)) is not None
    assert provider.jwks_hits == 2
    # The refreshed set replaced the old one: rsa-1 is no longer trusted.
    assert await verifier.verify_token(mint()) is None
    assert provider.jwks_hits == 2


@pytest.mark.anyio
async def test_jwks_outage_keeps_the_last_good_keys(idp: tuple[IdP, str], caplog: pytest.LogCaptureFixture) -> None:
    provider, base = idp
    clock = FakeClock()
    verifier = jwt_verifier(base, clock, jwks_cache_ttl=60, unknown_kid_cooldown=10)
    assert await verifier.verify_token(mint()) is not None
    provider.jwks_status = 503
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="asgi_mcp.auth"):
        token = mint()
        assert await verifier.verify_token(token) is not None
    assert provider.jwks_hits == 2
    assert "keeping 2 last good keys" in caplog.text
    assert token not in caplog.text
    assert await verifier.verify_token(mint()) is not None
    assert provider.jwks_hits == 2  # failed fetches are retried once per cooldown, not per request
    clock.advance(10)
    provider.jwks_status = 200
    provider.jwks = jwks(EC_KEY)
    assert await verifier.verify_token(mint(EC_KEY, alg="ES256")) is not None
    assert provider.jwks_hits == 3


@pytest.mark.anyio
async def test_jwks_unreachable_from_the_start(anyio_backend: str) -> None:
    sock, port = listening_socket()
    sock.close()  # nothing listens there any more: connection refused
    verifier = JWTVerifier(jwks_url=f"http://127.0.0.1:{port}/jwks", issuer=ISSUER, audience=AUDIENCE, timeout=2)
    assert await verifier.verify_token(mint()) is None


@pytest.mark.anyio
async def test_jwks_fetch_is_bounded_by_the_timeout(anyio_backend: str) -> None:
    sock, port = listening_socket()  # accepts into the backlog, never answers
    with sock:
        verifier = JWTVerifier(jwks_url=f"http://127.0.0.1:{port}/jwks", issuer=ISSUER, audience=AUDIENCE, timeout=0.2)
        with anyio.fail_after(5):
            assert await verifier.verify_token(mint()) is None


@pytest.mark.anyio
async def test_published_symmetric_keys_are_ignored(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    secret = OctKey.generate_key(256, parameters={"kid": "rsa-1"})
    provider.jwks = {"keys": [secret.as_dict(private=True), EC_KEY.as_dict(private=False)]}
    verifier = jwt_verifier(base)
    assert await verifier.verify_token(mint(secret, alg="HS256")) is None
    assert await verifier.verify_token(mint(EC_KEY, alg="ES256")) is not None


# -- IntrospectionVerifier ------------------------------------------------------------------------


def introspection_answer(**fields: Any) -> dict[str, Any]:
    return {
        "active": True,
        "client_id": "client-a",
        "sub": "user-1",
        "iss": ISSUER,
        "aud": [AUDIENCE, "https://other.example"],
        "scope": "mcp:tools mcp:read",
        "exp": int(time.time()) + 300,
        **fields,
    }


@pytest.mark.anyio
@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_introspection_active_and_inactive(idp: tuple[IdP, str], auth_method: Any) -> None:
    provider, base = idp
    provider.active["opaque-1"] = introspection_answer()
    verifier = IntrospectionVerifier(
        f"{base}/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, auth_method=auth_method
    )
    access = await verifier.verify_token("opaque-1")
    assert access is not None
    assert access.token == "opaque-1"
    assert access.client_id == "client-a"
    assert access.scopes == ["mcp:tools", "mcp:read"]
    assert access.resource == AUDIENCE
    assert access.subject == "user-1"
    assert access.claims is not None
    assert access.claims["iss"] == ISSUER
    assert access.expires_at == provider.active["opaque-1"]["exp"]
    assert await verifier.verify_token("unknown") is None
    provider.active["inactive"] = {"active": False}
    assert await verifier.verify_token("inactive") is None
    sent = provider.introspections[0]
    assert sent["form"]["token"] == "opaque-1"
    assert sent["form"]["token_type_hint"] == "access_token"
    if auth_method == "client_secret_basic":
        assert sent["authorization"].startswith("Basic ")
        assert "client_secret" not in sent["form"]
    else:
        assert sent["authorization"] is None
        assert sent["form"]["client_secret"] == CLIENT_SECRET


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("why", "answer"),
    [
        # Built when the test runs: times taken at collection would drift on a long run.
        ("expired", lambda: introspection_answer(exp=int(time.time()) - 5)),
        ("not yet valid", lambda: introspection_answer(nbf=int(time.time()) + 60)),
        ("names no one", lambda: introspection_answer(client_id=None, sub=None)),
        ("active is not true", lambda: introspection_answer(active="true")),
        ("bare active", lambda: {"active": True}),
    ],
)
async def test_introspection_answers_that_are_not_enough(
    idp: tuple[IdP, str], why: str, answer: Callable[[], dict[str, Any]]
) -> None:
    provider, base = idp
    provider.active["opaque"] = answer()
    verifier = IntrospectionVerifier(f"{base}/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert await verifier.verify_token("opaque") is None, why


@pytest.mark.anyio
async def test_introspection_failures_give_none(idp: tuple[IdP, str], caplog: pytest.LogCaptureFixture) -> None:
    provider, base = idp
    provider.active["opaque-9"] = introspection_answer()
    wrong = IntrospectionVerifier(f"{base}/introspect", client_id=CLIENT_ID, client_secret="wrong")
    with caplog.at_level(logging.WARNING, logger="asgi_mcp.auth"):
        assert await wrong.verify_token("opaque-9") is None
        provider.introspection_status = 503
        right = IntrospectionVerifier(f"{base}/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        assert await right.verify_token("opaque-9") is None
    assert "HTTP 401" in caplog.text
    assert "HTTP 503" in caplog.text
    assert "opaque-9" not in caplog.text
    assert CLIENT_SECRET not in caplog.text


@pytest.mark.anyio
async def test_introspection_cache_is_off_by_default(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    provider.active["opaque-2"] = introspection_answer()
    verifier = IntrospectionVerifier(f"{base}/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert await verifier.verify_token("opaque-2") is not None
    assert await verifier.verify_token("opaque-2") is not None
    assert len(provider.introspections) == 2
    del provider.active["opaque-2"]  # revoked: seen at once
    assert await verifier.verify_token("opaque-2") is None


@pytest.mark.anyio
async def test_introspection_cache_ttl(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    provider.active["opaque-3"] = introspection_answer()
    clock = FakeClock()
    verifier = IntrospectionVerifier(
        f"{base}/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, cache_ttl=60
    )
    verifier.clock = clock
    first = await verifier.verify_token("opaque-3")
    assert first is not None
    first.scopes.append("admin")  # a caller's change does not leak into the cache
    second = await verifier.verify_token("opaque-3")
    assert second is not None
    assert second.scopes == ["mcp:tools", "mcp:read"]
    assert len(provider.introspections) == 1
    assert "opaque-3" not in repr(vars(verifier))  # cache keys are digests
    del provider.active["opaque-3"]
    clock.advance(59)
    assert await verifier.verify_token("opaque-3") is not None  # the documented revocation lag
    clock.advance(1)
    assert await verifier.verify_token("opaque-3") is None
    assert len(provider.introspections) == 2
    assert await verifier.verify_token("opaque-3") is None  # inactive answers are not cached
    assert len(provider.introspections) == 3


@pytest.mark.anyio
async def test_introspection_cache_never_outlives_exp(idp: tuple[IdP, str]) -> None:
    provider, base = idp
    provider.active["opaque-4"] = introspection_answer(exp=int(time.time()) + 5)
    clock = FakeClock()
    verifier = IntrospectionVerifier(
        f"{base}/introspect", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, cache_ttl=3600
    )
    verifier.clock = clock
    assert await verifier.verify_token("opaque-4") is not None
    clock.advance(3)
    assert await verifier.verify_token("opaque-4") is not None
    assert len(provider.introspections) == 1
    clock.advance(3)  # past exp (as the cache measures it), far within cache_ttl
    assert await verifier.verify_token("opaque-4") is not None
    assert len(provider.introspections) == 2


def test_introspection_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="auth_method"):
        IntrospectionVerifier("https://idp.example/i", auth_method="private_key_jwt")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="client_id"):
        IntrospectionVerifier("https://idp.example/i", client_secret="x")
    with pytest.raises(ConfigurationError, match="negative"):
        IntrospectionVerifier("https://idp.example/i", cache_ttl=-1)


# -- end to end: McpApp with a JWTVerifier, over real HTTP ----------------------------------------

REQUIRED: Final = "mcp:tools"


def mcp_headers(token: str | None, session_id: str | None = None) -> dict[str, str]:
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": LEGACY}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    return headers


def challenge_params(value: str) -> dict[str, str]:
    """`Bearer k="v", k2="v2"` as a dict (the values here hold no quotes or commas)."""
    assert value.startswith("Bearer "), value
    params: dict[str, str] = {}
    for part in value[len("Bearer ") :].split('", '):
        name, _, quoted = part.partition("=")
        params[name.strip()] = quoted.strip('"')
    return params


@pytest.mark.anyio
async def test_mcp_app_end_to_end(idp: tuple[IdP, str], anyio_backend: str) -> None:
    _, idp_base = idp
    sock, port = listening_socket()
    resource = f"http://127.0.0.1:{port}/mcp"
    metadata = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
    verifier = JWTVerifier(jwks_url=f"{idp_base}/jwks", issuer=ISSUER, audience=resource)
    app = McpApp(
        build_server(),
        token_verifier=verifier,
        required_scopes=[REQUIRED],
        resource_server_url=resource,
        validate_resource=True,
        authorization_servers=[ISSUER],
        json_response=True,
    )
    good = mint(aud=resource, scope=f"{REQUIRED} mcp:read", azp="client-a", sub="alice")
    other = mint(aud=resource, scope=REQUIRED, azp="client-b", sub="bob")
    async with serving(app, sock, anyio_backend), httpx2.AsyncClient(timeout=10) as http:
        # No credentials: a plain challenge naming the metadata and the scope, no error code.
        bare = await http.post(resource, json=initialize(), headers=mcp_headers(None))
        assert bare.status_code == 401
        params = challenge_params(bare.headers["www-authenticate"])
        assert params == {"resource_metadata": metadata, "scope": REQUIRED}
        prm = await http.get(metadata)
        assert prm.status_code == 200
        assert prm.json()["resource"] == resource
        assert prm.json()["authorization_servers"] == [ISSUER]

        for bad in (mint(aud=resource, iss="https://evil.example/"), mint(), _tamper_signature(good), "garbage"):
            refused = await http.post(resource, json=initialize(), headers=mcp_headers(bad))
            assert refused.status_code == 401
            params = challenge_params(refused.headers["www-authenticate"])
            assert params["error"] == "invalid_token"
            assert params["resource_metadata"] == metadata
            assert refused.json()["error"] == "invalid_token"

        narrow = await http.post(resource, json=initialize(), headers=mcp_headers(mint(aud=resource, scope="x")))
        assert narrow.status_code == 403
        params = challenge_params(narrow.headers["www-authenticate"])
        assert params["error"] == "insufficient_scope"
        assert params["scope"] == REQUIRED
        assert REQUIRED in narrow.json()["error_description"]

        opened = await http.post(resource, json=initialize(), headers=mcp_headers(good))
        assert opened.status_code == 200, opened.text
        assert opened.json()["result"]["protocolVersion"] == LEGACY
        session_id = opened.headers["mcp-session-id"]
        acked = await http.post(
            resource, json=notification("notifications/initialized"), headers=mcp_headers(good, session_id)
        )
        assert acked.status_code == 202
        called = await http.post(resource, json=call_tool(2, "whoami"), headers=mcp_headers(good, session_id))
        assert called.status_code == 200, called.text
        assert called.json()["result"]["content"][0]["text"] == "tenant=None client=client-a"

        # A valid token of another principal cannot use this session.
        hijack = await http.post(resource, json=call_tool(3, "whoami"), headers=mcp_headers(other, session_id))
        assert hijack.status_code == 404
        # The same principal with a fresh token can.
        renewed = mint(aud=resource, scope=REQUIRED, azp="client-a", sub="alice", jti="second")
        again = await http.post(resource, json=call_tool(4, "whoami"), headers=mcp_headers(renewed, session_id))
        assert again.status_code == 200
        assert again.json()["result"]["content"][0]["text"].endswith("client-a")
