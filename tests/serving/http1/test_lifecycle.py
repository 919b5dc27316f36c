"""The built-in server's lifecycle and scope: lifespan, graceful and bounded shutdown, addresses,
trusted proxy headers, root_path, TLS, IPv6, Unix sockets, the access log. Both parsers, both backends.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from asgi_mcp._core.errors import ConfigurationError
from asgi_mcp._serving.http1 import BoundAddress, ServerConfig, serve
from tests.kit.builtin import builtin_server
from tests.kit.http1_app import Probe, ProbeApp
from tests.kit.raw_http import Conn, connect

from .test_protocol import get, parser, post, reply_on, serving

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

__all__ = ["parser"]


async def scope_of(port: int, *headers: str, path: str = "/scope?a=1&b=2") -> dict[str, Any]:
    async with connect(port) as conn:
        reply = await reply_on(conn, get(path, *headers))
        assert reply.status == 200, reply
        return dict(json.loads(reply.body))


async def test_scope_addresses_root_path_and_state(parser: str) -> None:
    async with serving(parser, root_path="/api") as (port, _):
        scope = await scope_of(port, path="/a%20b/scope?x=%41")
        assert scope["path"] == "/api/a b/scope"
        assert scope["raw_path"] == "/api/a%20b/scope"
        assert scope["root_path"] == "/api"
        assert scope["query_string"] == "x=%41"
        assert scope["client"][0] == "127.0.0.1"
        assert scope["server"] == ["127.0.0.1", port]
        assert scope["scheme"] == "http"
        assert scope["http_version"] == "1.1"
        assert scope["state"] is True


async def test_proxy_headers_only_from_trusted_proxies(parser: str) -> None:
    forwarded = ("x-forwarded-for: 203.0.113.7, 10.0.0.2", "x-forwarded-proto: https")
    async with serving(parser) as (port, _):
        scope = await scope_of(port, *forwarded)
        assert scope["client"][0] == "127.0.0.1"
        assert scope["scheme"] == "http"
    async with serving(parser, forwarded_allow=["127.0.0.1", "10.0.0.0/8"]) as (port, _):
        scope = await scope_of(port, *forwarded)
        assert scope["client"] == ["203.0.113.7", 0]
        assert scope["scheme"] == "https"
        scope = await scope_of(port, 'forwarded: for="[2001:db8::1]:4711";proto=https, for=10.0.0.3')
        assert scope["client"] == ["2001:db8::1", 4711]
        assert scope["scheme"] == "https"
        # Only the rightmost untrusted hop counts: what the client itself wrote is not believed.
        scope = await scope_of(port, "x-forwarded-for: 1.1.1.1, 198.51.100.9")
        assert scope["client"] == ["198.51.100.9", 0]


@pytest.mark.parametrize("held", ["/hold", "/direct/hold"])  # the answer as ASGI messages, or in one call
async def test_graceful_shutdown(parser: str, held: str) -> None:
    probe = Probe()
    stop = anyio.Event()
    config = ServerConfig(port=0, parser=parser, graceful_timeout=5)  # type: ignore[arg-type]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            address = await tg.start(partial(serve, ProbeApp(probe), config, shutdown_trigger=stop.wait))
            async with (
                connect(address.port) as idle,
                connect(address.port) as silent,
                connect(address.port) as busy,
                connect(address.port) as sse,
            ):
                assert (await reply_on(idle, post("/echo", b"x"), "POST")).status == 200
                busy.expect("POST")
                await busy.send(post(held, b""))
                await probe.started.wait()
                sse.expect("GET")
                await sse.send(get("/stream"))
                assert await sse.head() is not None
                assert await sse.chunk() == b"data: one\n\n"
                stop.set()
                await idle.wait_closed()  # idle keep-alive connections close at once
                await silent.wait_closed()  # and so do connections that never sent anything
                await probe.lifespan_stopping.wait()  # the app is told while requests still run
                assert await sse.chunk() == b""  # ... and ends its stream through it
                with pytest.raises(OSError):  # noqa: PT011 (refused, whatever errno the platform says)
                    await anyio.connect_tcp("127.0.0.1", address.port)  # no longer accepting
                probe.gate.set()
                reply = await busy.reply()  # the request in flight completes
                assert reply is not None
                assert reply.status == 200
                assert reply.header("connection") == "close"
        assert probe.lifespan == ["lifespan.startup", "lifespan.shutdown"]


async def test_shutdown_is_bounded(parser: str) -> None:
    probe = Probe()
    stop = anyio.Event()
    config = ServerConfig(port=0, parser=parser, graceful_timeout=0.2)  # type: ignore[arg-type]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            address = await tg.start(partial(serve, ProbeApp(probe), config, shutdown_trigger=stop.wait))
            async with connect(address.port) as conn:
                await conn.send(post("/hold", b""))  # never released
                await probe.started.wait()
                stop.set()
                await conn.wait_closed()
        assert probe.finished.is_set()


async def test_cancellation_stops_at_once(parser: str) -> None:
    probe = Probe()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            config = ServerConfig(port=0, parser=parser)  # type: ignore[arg-type]
            address = await tg.start(partial(serve, ProbeApp(probe), config))
            async with connect(address.port) as conn:
                await conn.send(post("/hold", b""))
                await probe.started.wait()
                tg.cancel_scope.cancel()
        assert probe.finished.is_set()


async def test_lifespan_failure_and_absence(parser: str) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    config = ServerConfig(port=0, parser=parser)  # type: ignore[arg-type]
    with anyio.fail_after(10), pytest.raises(ConfigurationError, match="no database"):
        await serve(failing, config)
    probe = Probe()
    async with builtin_server(ProbeApp(probe, lifespan=False), parser) as address:  # "auto": served anyway
        assert (await scope_of(address.port))["state"] is False
    config = ServerConfig(port=0, parser=parser, lifespan="on")  # type: ignore[arg-type]
    with anyio.fail_after(10), pytest.raises(ConfigurationError, match="does not support"):
        await serve(ProbeApp(Probe(), lifespan=False), config)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


async def test_tls(parser: str, tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    async with builtin_server(ProbeApp(Probe()), parser, ssl_context=server_context) as address:
        assert address.url.startswith("https://")
        stream = await anyio.connect_tcp(
            "127.0.0.1", address.port, ssl_context=client_context, tls_standard_compatible=False
        )
        conn = Conn(stream)
        try:
            scope = json.loads((await reply_on(conn, get("/scope"))).body)
            assert scope["scheme"] == "https"
            assert (await reply_on(conn, post("/echo", b"tls"), "POST")).body == b"tls"
        finally:
            await conn.aclose()


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback here")
async def test_ipv6(parser: str) -> None:
    async with builtin_server(ProbeApp(Probe()), parser, host="::1") as address:
        assert address.host == "::1"
        assert address.url.startswith("http://[::1]:")
        conn = Conn(await anyio.connect_tcp("::1", address.port))
        try:
            scope = json.loads((await reply_on(conn, get("/scope"))).body)
            assert scope["client"][0] == "::1"
        finally:
            await conn.aclose()


async def test_unix_socket(parser: str, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    async with builtin_server(ProbeApp(Probe()), parser, uds=path) as address:
        assert address == BoundAddress("", 0, uds=path)
        conn = Conn(await anyio.connect_unix(path))
        try:
            scope = json.loads((await reply_on(conn, get("/scope"))).body)
            assert scope["client"] is None
            assert scope["server"] == [path, None]
        finally:
            await conn.aclose()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_access_log(parser: str) -> None:
    logger = logging.getLogger("asgi_mcp.access")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with serving(parser) as (port, _):
            await scope_of(port, "authorization: Bearer SECRET-TOKEN", path="/scope?token=SECRET-QUERY")
        assert handler.records == [], "the access log is off by default"
        async with serving(parser, access_log=True) as (port, _):
            await scope_of(port, "authorization: Bearer SECRET-TOKEN", path="/scope?token=SECRET-QUERY")
            async with connect(port) as conn:
                conn.expect("GET")
                await conn.send(b"GET /echo HTTP/1.1\r\n\r\n")  # refused by the server: not logged by the app
                await conn.reply()
            # The server's 500 for a failing app, and a response the app cut short, are logged too.
            for path in ("/boom", "/boom-late"):
                async with connect(port) as conn:
                    await conn.send(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
                    await conn.wait_closed()
        record, failed, cut = handler.records
        assert record.getMessage().endswith('"GET /scope HTTP/1.1" 200 ' + record.getMessage().rsplit(" ", 1)[1])
        assert failed.getMessage().endswith('"GET /boom HTTP/1.1" 500 0')
        assert cut.getMessage().endswith('"GET /boom-late HTTP/1.1" 200 7')  # b"partial"
        everything = repr(vars(record)) + repr(record.args)
        assert "SECRET" not in everything
        assert "token" not in everything
        assert "Bearer" not in everything
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


async def test_builtin_runner_serves_an_mcp_app_like_the_hypercorn_one(parser: str) -> None:
    from asgi_mcp import McpApp
    from asgi_mcp._serving.builtin import BuiltinServer
    from tests.kit.mcp_servers import build_server

    app = McpApp(build_server(), shutdown_timeout=1.0)
    runner = BuiltinServer(app, host="127.0.0.1", port=0, health_path="/healthz")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            port = await tg.start(runner.run)
            async with connect(port) as conn:
                reply = await reply_on(conn, get("/healthz"))
                assert (reply.status, reply.body) == (200, b"ok")
            runner.shutdown()
        assert not app.stats()["running"]
