"""`AppConfig`: every `McpApp` option validated once, normalised, immutable, and a repr without secrets."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import pytest
from mcp.server import MCPServer, Server
from mcp.server.auth.provider import AccessToken

from asgi_mcp import ConfigurationError, InMemoryEventStore, McpApp, StaticTokenVerifier, Tenants
from asgi_mcp._app.config import DEFAULT_MAX_BODY, AppConfig

SECRET: Final = "s3cret-token-that-must-never-show"
OTHER_SECRET: Final = "another-s3cret-token-for-a-tenant"


def server() -> MCPServer:
    return MCPServer("config-test", version="1.0.0")


def factory() -> MCPServer:
    return server()


class LeakyVerifier:
    """A verifier whose own repr prints its token: the config must not rely on reprs being safe."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"LeakyVerifier(token={self.token!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        return None


BAD_OPTIONS: Final[list[tuple[dict[str, Any], str]]] = [
    ({}, "exactly one of `server`"),
    ({"server": "both", "tenants": "both"}, "exactly one of `server`"),
    ({"tenants": "tenants", "token_verifier": LeakyVerifier("x")}, "takes no `token_verifier`"),
    ({"validate_resource": True}, "validate_resource needs resource_server_url"),
    ({"max_body_size": 0}, "max_body_size must be positive"),
    ({"max_sessions": 0}, "max_sessions must be at least 1"),
    ({"session_idle_timeout": 0}, "session_idle_timeout must be positive"),
    ({"retry_interval": -1}, "retry_interval must not be negative"),
    ({"keepalive_interval": 0}, "keepalive_interval must be positive"),
    ({"shutdown_timeout": -0.1}, "shutdown_timeout must not be negative"),
    ({"tool_schema_ttl": -1}, "tool_schema_ttl must not be negative"),
    ({"cors_origins": "*"}, "cors_origins takes a list"),
    ({"required_scopes": "read"}, "required_scopes takes a list"),
    ({"allowed_hosts": "example.com"}, "allowed_hosts takes a list"),
    ({"health_path": "/mcp/"}, "three different paths"),
    ({"ready_path": "mcp"}, "three different paths"),
    ({"health_path": "/probe", "ready_path": "/probe/"}, "three different paths"),
]


def _with_source(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with a real server, unless the case is about the source itself."""
    options = dict(options)
    if options.get("tenants") == "tenants":
        options["tenants"] = Tenants()
    if options.get("server") == "both":
        options["server"], options["tenants"] = server(), Tenants()
    elif "tenants" not in options and options:
        options["server"] = server()
    return options


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_each_invalid_option_is_refused_by_the_config_and_by_the_app(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AppConfig(**_with_source(options))
    with pytest.raises(ConfigurationError, match=message):
        McpApp(**_with_source(options))


def test_a_server_that_is_not_an_mcp_server_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected an mcp Server or MCPServer, got dict"):
        McpApp({})


def test_the_edges_of_each_range_are_accepted() -> None:
    config = AppConfig(
        server=server(),
        max_body_size=1,
        max_sessions=1,
        session_idle_timeout=None,
        retry_interval=0,
        keepalive_interval=0.001,
        shutdown_timeout=0,
        tool_schema_ttl=0,
    )
    assert (config.max_body_size, config.max_sessions, config.shutdown_timeout) == (1, 1, 0)


def test_options_are_normalised_once() -> None:
    mcp = server()
    config = McpApp(
        mcp,
        path="tools/",
        health_path="healthz/",
        ready_path="/readyz",
        required_scopes=["read", "write"],
        authorization_servers=["https://auth.example.com"],
        allowed_hosts=["example.com"],
        cors_origins=None,
    ).config
    assert config.server is mcp._lowlevel_server
    assert isinstance(config.server, Server)
    assert (config.path, config.health_path, config.ready_path) == ("/tools", "/healthz", "/readyz")
    assert config.required_scopes == ("read", "write")
    assert config.authorization_servers == ("https://auth.example.com",)
    assert config.allowed_hosts == ("example.com",)
    assert (config.allowed_origins, config.cors_origins) == (None, ())


def test_the_app_builds_exactly_the_config_of_its_arguments() -> None:
    mcp = server()
    store = InMemoryEventStore()
    app = McpApp(mcp, path="/x", json_response=True, event_store=store, max_sessions=3, gc_freeze=True)
    assert app.config == AppConfig(
        server=mcp, path="/x", json_response=True, event_store=store, max_sessions=3, gc_freeze=True
    )
    defaults = McpApp(mcp).config
    assert (defaults.path, defaults.max_body_size, defaults.keepalive_interval) == ("/mcp", DEFAULT_MAX_BODY, 15.0)


def test_the_config_is_immutable_and_the_app_has_no_option_attributes() -> None:
    app = McpApp(server(), max_sessions=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        app.config.max_sessions = 6  # type: ignore[misc]
    with pytest.raises(AttributeError):
        app.config = AppConfig(server=server())  # type: ignore[misc]
    for option in ("max_sessions", "path", "keepalive_interval", "host", "auth", "cors", "tenants", "metrics"):
        assert not hasattr(app, option), option
    with pytest.raises(AttributeError):
        app.max_sessions = 6  # type: ignore[attr-defined]
    assert app.config.max_sessions == 5


def test_a_changed_copy_is_validated_again() -> None:
    config = AppConfig(server=server())
    assert dataclasses.replace(config, max_sessions=2).max_sessions == 2
    with pytest.raises(ConfigurationError, match="max_sessions"):
        dataclasses.replace(config, max_sessions=0)


def test_repr_lists_every_option() -> None:
    app = McpApp(server(), path="/x", max_sessions=7, cors_origins=["https://app.example.com"])
    text = repr(app.config)
    for field in dataclasses.fields(AppConfig):
        assert f"{field.name}=" in text, field.name
    assert "path='/x'" in text
    assert "max_sessions=7" in text
    assert "cors_origins=('https://app.example.com',)" in text
    assert "server=<Server 'config-test'>" in text
    assert repr(app).startswith("McpApp(AppConfig(")
    assert "running=False" in repr(app)


def test_repr_never_shows_a_token() -> None:
    grant = {"client_id": "client", "scopes": ["read"]}
    with_verifier = McpApp(
        server(),
        token_verifier=StaticTokenVerifier({SECRET: grant}),
        resource_server_url=f"https://user:{SECRET}@mcp.example.com/mcp",
        authorization_servers=[f"https://{SECRET}@auth.example.com"],
    )
    leaky = McpApp(server(), token_verifier=LeakyVerifier(SECRET))
    tenants = Tenants({OTHER_SECRET: factory})
    tenants.add(SECRET, factory, label="labelled")
    with_tenants = McpApp(tenants=tenants, event_store=InMemoryEventStore())
    for app in (with_verifier, leaky, with_tenants):
        for text in (repr(app.config), repr(app), str(app.config)):
            assert SECRET not in text
            assert OTHER_SECRET not in text
    assert "token_verifier=<StaticTokenVerifier>" in repr(with_verifier.config)
    assert "token_verifier=<LeakyVerifier>" in repr(leaky.config)
    assert "tenants=<Tenants>" in repr(with_tenants.config)
    assert "event_store=<InMemoryEventStore>" in repr(with_tenants.config)
    assert "resource_server_url='https://<redacted>@mcp.example.com/mcp'" in repr(with_verifier.config)
    assert "authorization_servers=('https://<redacted>@auth.example.com',)" in repr(with_verifier.config)


def test_redis_url_shares_sessions_bus_and_events_and_hides_its_credentials() -> None:
    app = McpApp(MCPServer("x"), redis_url="redis://:pa55word@redis.internal:6379/0", fleet_secret="k" * 32)
    fleet = app.config.fleet
    assert fleet is not None
    assert type(fleet.directory).__name__ == "RedisSessionDirectory"
    assert type(fleet.bus).__name__ == "RedisMessageBus"
    assert app.config.event_store is fleet.event_store  # replay shared too, unless an event store is given
    assert fleet.secret == b"k" * 32
    shown = repr(app.config)
    assert "pa55word" not in shown
    assert "kkkk" not in shown
    assert "redis.internal" in shown
    own = InMemoryEventStore()
    assert McpApp(MCPServer("x"), redis_url="redis://127.0.0.1:1/0", event_store=own).config.event_store is own


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redis_url": "http://127.0.0.1:6379"}, "redis://"),
        ({"redis_url": "redis://127.0.0.1:1/0", "fleet_secret": "short"}, "16 bytes"),
        ({"redis_url": "redis://127.0.0.1:1/0", "fleet": object()}, "not both"),
    ],
)
def test_bad_fleet_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        McpApp(MCPServer("x"), **options)


def test_without_a_fleet_nothing_is_shared() -> None:
    config = McpApp(MCPServer("x")).config
    assert config.fleet is None
    assert config.redis_url is None
    assert config.event_store is None
