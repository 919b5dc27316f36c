"""`asgi-mcp fleet --redis URL`: the workers of a running fleet and the sessions of each tenant.

Reads the fleet's roster (each worker beats in it while it runs) and, when `ASGI_MCP_FLEET_SECRET`
is set, counts the tokens of its shared tenant store. Tenants appear by id (their label); nothing
printed is a token or a digest.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .._app.fleet_health import fleet_report
from .._ports.tenant_store import TenantStore
from .._stores import roster_from_url, tenant_store_from_url
from .tokens import SECRET_VARIABLE

__all__ = ["add_fleet_parser", "run_fleet"]


def add_fleet_parser(commands: Any) -> None:
    what = "the workers alive in a fleet and its sessions per tenant (never a token)"
    fleet = commands.add_parser(
        "fleet",
        help=what,
        description=f"Print {what}. With {SECRET_VARIABLE} set, the tokens registered are counted too.",
    )
    fleet.add_argument("--redis", metavar="URL", required=True, help="the fleet's Redis/Valkey URL")
    fleet.add_argument("--prefix", default="asgi_mcp", help="the fleet's key prefix (default: asgi_mcp)")


async def run_fleet(args: argparse.Namespace, say: Any) -> None:
    roster: Any = roster_from_url(args.redis, prefix=args.prefix)
    async with roster:
        records = await roster.alive()
    secret = os.environ.get(SECRET_VARIABLE, "").encode()
    tokens = await _tokens(tenant_store_from_url(args.redis, secret=secret, prefix=args.prefix)) if secret else None
    for line in fleet_report(records, tokens, time.time()):
        say(line)


async def _tokens(store: TenantStore) -> int:
    opened: Any = store
    async with opened:
        snapshot = await store.snapshot()
    now = time.time()
    return sum(1 for credential in snapshot.credentials if not credential.expired(now))
