"""The app's side routes: everything it answers besides the MCP endpoint itself.

- liveness (`health_path`): 200 `ok` whenever the process answers at all;
- readiness (`ready_path`): 200 `ready` while the app runs, 503 `not ready` before startup has
  completed and from the moment shutdown begins;
- RFC 9728 protected-resource metadata, at the root and the path-suffixed well-known URL, when
  authorization servers are configured;
- CORS preflights (from an allowed origin, on any path);
- 404 for anything else.

Liveness and readiness are one kind of probe with one behaviour (`send_probe`): `GET` and `HEAD`,
plain text, never cached, 405 with `Allow` for other methods, and no authentication. The hypercorn
shell's own liveness route answers through the same function.
"""

from __future__ import annotations

import logging
from typing import Final

from .._auth.bearer import protected_resource_metadata
from .._core.asgi import Scope, Send, send_empty, send_json
from .._core.cors import CorsPolicy
from .._core.http import Headers
from .config import AppConfig
from .edge_auth import ResourceUrls

__all__ = ["SideRoutes", "send_probe"]

http_logger = logging.getLogger("asgi_mcp.http")

PROBE_METHODS: Final = ("GET", "HEAD")
_PROBE_HEADERS: Final = ((b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"))
_NOT_ALLOWED_HEADERS: Final = [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]


async def send_probe(method: str, send: Send, status: int, body: bytes) -> None:
    """Answer a liveness or readiness probe: `GET` gets `body`, `HEAD` the same headers without it."""
    if method not in PROBE_METHODS:
        await send({"type": "http.response.start", "status": 405, "headers": _NOT_ALLOWED_HEADERS})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [*_PROBE_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class SideRoutes:
    """Answers the routes above for one app; built once from its config."""

    __slots__ = ("cors", "health_path", "ready_path", "required_scopes", "urls")

    def __init__(self, config: AppConfig, urls: ResourceUrls, cors: CorsPolicy | None) -> None:
        self.health_path = config.health_path
        self.ready_path = config.ready_path
        self.required_scopes = tuple(config.required_scopes)
        self.urls = urls
        self.cors = cors

    async def cors_send(self, scope: Scope, headers: Headers, send: Send) -> Send | None:
        """The `send` that adds CORS headers for an allowed origin (any path); None once a preflight
        is answered."""
        cors, origin = self.cors, headers.get("origin")
        if cors is None or origin is None or not cors.allows(origin):
            return send
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self.preflight(origin, headers, send)
            return None
        return cors.wrap(send, origin)

    async def preflight(self, origin: str, headers: Headers, send: Send) -> None:
        """Answer a CORS preflight from an allowed origin: 204 with the grant, or 403."""
        assert self.cors is not None
        answer = self.cors.preflight_headers(origin, headers.get("access-control-request-headers"))
        if answer is None:
            reason = "CORS preflight asks for a request header that is not allowed"
            http_logger.info(
                "refused OPTIONS preflight from %s: %s (403)",
                origin,
                reason,
                extra={"status": 403, "reason": reason, "method": "OPTIONS"},
            )
            await send_empty(send, 403)
            return
        await send_empty(send, 204, answer)

    async def answer(self, scope: Scope, send: Send, *, ready: bool) -> None:
        """A request off the endpoint: a probe, the metadata, or 404. `ready`: the app runs."""
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        method = scope["method"]
        if path == self.health_path:
            await send_probe(method, send, 200, b"ok")
            return
        if path == self.ready_path:
            await send_probe(method, send, *((200, b"ready") if ready else (503, b"not ready")))
            return
        urls = self.urls
        if urls.authorization_servers and method in PROBE_METHODS and path in urls.metadata_paths:
            document = protected_resource_metadata(
                urls.resource_url(scope), urls.authorization_servers, self.required_scopes
            )
            await send_json(send, 200, document, [(b"cache-control", b"public, max-age=3600")])
            return
        await send_json(send, 404, {"error": "not_found"})
