"""DNS-rebinding protection: the Host/Origin policy, pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_mcp import SecurityRefusal
from asgi_mcp._core import origin as origin_module
from asgi_mcp._core.http import text
from asgi_mcp._core.origin import OriginPolicy

LOOPBACK_V4 = ("127.0.0.1", 8000)
LOOPBACK_V6 = ("::1", 8000)
PUBLIC = ("0.0.0.0", 8000)
PUBLIC_IP = ("203.0.113.7", 443)


def refused(policy: OriginPolicy, host: str | None, origin: str | None, server: object) -> int | None:
    try:
        policy.check(host, origin, server)
    except SecurityRefusal as refusal:
        return refusal.status
    return None


DEFAULT = OriginPolicy(None, None)


class TestLoopbackBindDefaults:
    @pytest.mark.parametrize("server", [LOOPBACK_V4, LOOPBACK_V6, ("localhost", 1)])
    @pytest.mark.parametrize(
        "host", ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000", "127.0.0.2", "app.localhost:3000"]
    )
    def test_loopback_hosts_pass(self, server: object, host: str) -> None:
        assert refused(DEFAULT, host, None, server) is None

    @pytest.mark.parametrize(
        "host", ["evil.example.com", "evil.example.com:8000", "10.0.0.1:8000", "localhost.evil.com", None]
    )
    def test_other_hosts_are_421(self, host: str | None) -> None:
        assert refused(DEFAULT, host, None, LOOPBACK_V4) == 421

    @pytest.mark.parametrize(
        "origin", ["http://localhost:3000", "http://127.0.0.1:8000", "https://[::1]", "http://app.localhost"]
    )
    def test_loopback_origins_pass(self, origin: str) -> None:
        assert refused(DEFAULT, "127.0.0.1:8000", origin, LOOPBACK_V4) is None

    @pytest.mark.parametrize(
        "origin", ["http://evil.example.com", "https://127.0.0.1.evil.com", "null", "http://10.0.0.1"]
    )
    def test_other_origins_are_403(self, origin: str) -> None:
        assert refused(DEFAULT, "127.0.0.1:8000", origin, LOOPBACK_V4) == 403

    def test_host_is_checked_before_origin(self) -> None:
        assert refused(DEFAULT, "evil.example.com", "http://evil.example.com", LOOPBACK_V4) == 421


class TestPublicBindDefaults:
    @pytest.mark.parametrize("server", [PUBLIC, PUBLIC_IP, None])
    def test_any_host_without_origin(self, server: object) -> None:
        assert refused(DEFAULT, "api.example.com", None, server) is None
        assert refused(DEFAULT, None, None, server) is None

    def test_same_origin_passes(self) -> None:
        assert refused(DEFAULT, "api.example.com", "https://api.example.com", PUBLIC) is None
        assert refused(DEFAULT, "API.example.com:8443", "https://api.example.com:8443", PUBLIC) is None

    @pytest.mark.parametrize("origin", ["https://evil.example.com", "https://api.example.com:444", "null"])
    def test_cross_origin_is_403(self, origin: str) -> None:
        assert refused(DEFAULT, "api.example.com", origin, PUBLIC) == 403

    def test_origin_without_host_is_403(self) -> None:
        assert refused(DEFAULT, None, "https://api.example.com", PUBLIC) == 403


class TestAllowLists:
    def test_allowed_hosts_replace_loopback_default(self) -> None:
        policy = OriginPolicy(["mcp.example.com", "internal:*"], None)
        assert refused(policy, "mcp.example.com", None, LOOPBACK_V4) is None
        assert refused(policy, "MCP.EXAMPLE.COM", None, LOOPBACK_V4) is None
        assert refused(policy, "internal:9000", None, PUBLIC) is None
        assert refused(policy, "internal", None, PUBLIC) is None
        assert refused(policy, "localhost:8000", None, LOOPBACK_V4) == 421
        assert refused(policy, "mcp.example.com:8000", None, PUBLIC) == 421
        assert refused(policy, None, None, PUBLIC) == 421

    def test_allowed_origins(self) -> None:
        policy = OriginPolicy(None, ["https://app.example.com", "http://localhost:*"])
        assert refused(policy, "api.example.com", "https://app.example.com", PUBLIC) is None
        assert refused(policy, "api.example.com", "http://localhost:5173", PUBLIC) is None
        assert refused(policy, "api.example.com", "https://api.example.com", PUBLIC) == 403  # list replaces same-origin
        assert refused(policy, "api.example.com", "https://app.example.com.evil", PUBLIC) == 403

    def test_wildcards(self) -> None:
        policy = OriginPolicy(["*"], ["*"])
        assert refused(policy, "evil.example.com", "http://evil.example.com", LOOPBACK_V4) is None

    def test_empty_lists_refuse_everything(self) -> None:
        policy = OriginPolicy([], [])
        assert refused(policy, "localhost", None, LOOPBACK_V4) == 421
        assert refused(OriginPolicy(["*"], []), "x", "http://x", PUBLIC) == 403

    def test_refusal_is_a_protocol_error_with_a_body(self) -> None:
        with pytest.raises(SecurityRefusal) as caught:
            DEFAULT.check("127.0.0.1", "http://evil.example.com", LOOPBACK_V4)
        body = caught.value.error_body()
        assert body is not None
        assert body["id"] is None


_HOSTS = st.sampled_from(
    [b"127.0.0.1:8000", b"localhost", b" localhost:1 ", b"[::1]:8000", b"evil.example.com", b"Example.COM:443", b""]
)
_ORIGINS = st.sampled_from(
    [b"http://127.0.0.1:8000", b"http://localhost:3000", b"https://evil.example", b"https://example.com:443", b"\t"]
)
_POLICIES = [
    DEFAULT,
    OriginPolicy(["example.com:*"], ["https://example.com:443"]),
    OriginPolicy(None, None, cors_origins=["https://evil.example"]),
]


@given(
    st.sampled_from(range(len(_POLICIES))),
    st.none() | _HOSTS | st.binary(max_size=12),
    st.none() | _ORIGINS | st.binary(max_size=12),
    st.sampled_from([LOOPBACK_V4, PUBLIC, PUBLIC_IP, None, ("/tmp/mcp.sock", None)]),
)
def test_check_raw_gives_check_verdict_on_the_lines_as_sent(
    policy_index: int, host: bytes | None, origin: bytes | None, server: object
) -> None:
    """`check_raw` (what the app calls, its passes kept) agrees with `check` on the decoded lines, asked
    once or again."""
    policy = _POLICIES[policy_index]
    expected = refused(
        policy, text(host) if host is not None else None, text(origin) if origin is not None else None, server
    )
    for _ in range(2):
        try:
            policy.check_raw(host, origin, server)
            verdict = None
        except SecurityRefusal as refusal:
            verdict = refusal.status
        assert verdict == expected


def test_check_raw_keeps_a_bounded_number_of_passes() -> None:
    policy = OriginPolicy(["*"], None)
    for n in range(2 * origin_module._PASSED_KEPT):
        policy.check_raw(b"host-%d" % n, None, PUBLIC)
    assert len(policy._passed) == origin_module._PASSED_KEPT
    policy.check_raw(b"host-0", None, PUBLIC)  # kept: passes
    policy.check_raw(b"host-%d" % (2 * origin_module._PASSED_KEPT - 1), None, PUBLIC)  # not kept: checked, passes
    with pytest.raises(SecurityRefusal):
        OriginPolicy(["a.example"], None).check_raw(b"b.example", None, PUBLIC)
