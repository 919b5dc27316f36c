"""Who is calling: authentication at the app's edge, and the URLs RFC 9728 names.

`EdgeAuth` turns a request's `Authorization` header into a `Principal` (its owner, its tenant, and
how to reach the server that answers it), by the configured token verifier or by the tenant
registry, and raises 401/403 with the challenge RFC 6750 and RFC 9728 ask for. `ResourceUrls` says
where the endpoint and its protected-resource metadata are, as seen from outside (behind a mount
point or a proxy). Both are built once from the `AppConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from mcp.server.auth.provider import AccessToken

from .._auth.bearer import AuthenticationError, BearerAuth, challenge, metadata_paths, parse_bearer, principal_key
from .._auth.principal import Principal
from .._core.asgi import HttpRequest, Scope
from .._core.http import Headers
from .._kernel.hosting import ServerHost
from .._tenancy.isolation import redacted
from .._tenancy.servers import TenantRemoved, TenantServers
from .._tenancy.tenants import Tenants
from .config import AppConfig

__all__ = ["EdgeAuth", "ResourceUrls"]

INVALID_TOKEN: Final = "The access token is invalid"


class ResourceUrls:
    """The endpoint's public URL and its metadata URL, from the config and the request."""

    __slots__ = ("authorization_servers", "metadata_paths", "path", "resource_server_url")

    def __init__(self, config: AppConfig) -> None:
        self.path = config.path
        self.resource_server_url = config.resource_server_url
        self.authorization_servers = tuple(config.authorization_servers)
        # The root form and the path-suffixed form (RFC 9728 section 3.1).
        self.metadata_paths = metadata_paths(config.path)

    def resource_url(self, scope: Scope) -> str:
        if self.resource_server_url is not None:
            return self.resource_server_url
        headers = Headers(scope["headers"]) if not isinstance(scope.get("headers"), Headers) else scope["headers"]
        host = headers.get("host") or "localhost"
        root = scope.get("root_path", "")
        return f"{scope.get('scheme', 'http')}://{host}{root}{'' if self.path == '/' else self.path}"

    def metadata_url(self, request: HttpRequest) -> str | None:
        """The metadata URL challenges advertise; None when no authorization server is configured."""
        if not self.authorization_servers:
            return None
        try:
            resource = urlsplit(self.resource_url(request.scope))
        except ValueError:  # a Host header no URL can hold ("a]"): advertise nothing rather than fail
            return None
        # The metadata this app serves, seen from outside: under the same prefix as the endpoint
        # (the mount point, `root_path`, or a proxy's prefix in `resource_server_url`).
        suffix = "" if self.path == "/" else self.path
        path = resource.path if suffix else resource.path.rstrip("/")
        prefix = path[: len(path) - len(suffix)] if path.endswith(suffix) else ""
        return f"{resource.scheme}://{resource.netloc}{prefix}{self.metadata_paths[1]}"


class EdgeAuth:
    """Authenticates a request by the token verifier or by the tenant registry (never both)."""

    __slots__ = ("bearer", "expose_raw_token", "required_scopes", "tenant_servers", "tenants", "urls")

    def __init__(self, config: AppConfig, tenant_servers: TenantServers | None, urls: ResourceUrls) -> None:
        self.urls = urls
        self.required_scopes = tuple(config.required_scopes)
        self.tenants: Tenants | None = config.tenants
        self.tenant_servers = tenant_servers
        # Tool code reads the caller's token only when the operator opts in (passing it on is forbidden).
        self.expose_raw_token = config.expose_raw_token
        self.bearer = (
            BearerAuth(
                config.token_verifier,
                required_scopes=config.required_scopes,
                resource_url=config.resource_server_url,
                validate_resource=config.validate_resource,
            )
            if config.token_verifier is not None
            else None
        )

    async def authenticate(self, request: HttpRequest, anonymous: Principal) -> tuple[Principal, AccessToken]:
        """Who is calling; raises 401/403 with the right challenge.

        `anonymous` is the run's principal for the single served server: a verified caller reaches
        that same server. Unless `expose_raw_token`, the access token carries a digest prefix in
        place of the bearer. A tenant's principal names its credential (digest, expiry).
        """
        metadata_url = self.urls.metadata_url(request)
        token = parse_bearer(request.headers.get("authorization"))
        if self.bearer is not None:
            access = await self.bearer.authenticate(token, metadata_url)
            principal = Principal(owner=principal_key(access), tenant_id=None, host=anonymous.host)
            return principal, access if self.expose_raw_token else redacted(access, None, None)
        assert self.tenants is not None and self.tenant_servers is not None
        found = self.tenants.credential(token) if token is not None else None
        if found is None:
            error = "invalid_token" if token is not None else None
            raise tenant_challenge(
                error, INVALID_TOKEN if token is not None else None, metadata_url, self.required_scopes
            )
        tenant, digest, not_after = found
        servers = self.tenant_servers
        scopes = self.required_scopes
        access = AccessToken(
            token=(token or "") if self.expose_raw_token else f"sha256:{digest.hex()[:12]}",
            client_id=tenant.tenant_id,
            scopes=list(scopes),
            expires_at=int(not_after) if not_after is not None else None,
        )

        async def host() -> ServerHost:
            try:
                return await servers.host_for(tenant)
            except TenantRemoved:
                # Removed while this request waited for its server: as if it had come a moment later.
                raise tenant_challenge("invalid_token", INVALID_TOKEN, metadata_url, scopes) from None

        principal = Principal(owner=tenant.owner, tenant_id=tenant.tenant_id, host=host, credential=(digest, not_after))
        return principal, access

    def no_longer_valid(self, request: HttpRequest) -> AuthenticationError:
        """The 401 of an exchange cut because its token stopped working."""
        description = "The access token is no longer valid"
        return tenant_challenge("invalid_token", description, self.urls.metadata_url(request), self.required_scopes)


def tenant_challenge(
    error: str | None, description: str | None, metadata_url: str | None, scopes: Sequence[str]
) -> AuthenticationError:
    value = challenge(error=error, description=description, scopes=scopes, resource_metadata=metadata_url)
    description = description or "Authentication required"
    return AuthenticationError(
        401, error or "invalid_token", description, value, reason=f"{error or 'no credentials'}: {description}"
    )
