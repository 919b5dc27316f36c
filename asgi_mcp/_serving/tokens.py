"""`asgi-mcp tokens add|rotate|remove|list --redis URL`: the tokens of a running fleet, in its shared
tenant store. Every worker whose `Tenants(store=...)` mirrors that store has the change in force
within a moment. The HMAC secret comes from `ASGI_MCP_FLEET_SECRET` (32 bytes or more), the same on
every worker. A new token is printed once, here; nothing else ever shows a token or its digest.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from dataclasses import replace
from typing import Any, Final

from .._core.errors import ConfigurationError, TenantConflict
from .._ports.tenant_store import Credential, TenantRecord, TenantSnapshot
from .._stores import tenant_store_from_url

__all__ = ["add_tokens_parser", "run_tokens"]

SECRET_VARIABLE: Final = "ASGI_MCP_FLEET_SECRET"


def add_tokens_parser(commands: Any) -> None:
    tokens = commands.add_parser(
        "tokens",
        help="add, rotate, remove or list the tokens of a fleet (its shared tenant store in Redis)",
        description=f"Manage the tokens every worker mirroring the store serves. {SECRET_VARIABLE} must hold "
        "the workers' HMAC secret (32 bytes or more).",
    )
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, what in (
        ("add", "a new tenant and its first token (printed once)"),
        ("rotate", "a new token for a tenant (printed once); its other tokens end after --grace seconds"),
        ("remove", "a tenant and its tokens: 401 on every worker, its sessions and streams end"),
        ("list", "labels, plans and expiry (never a token or digest)"),
    ):
        action = actions.add_parser(name, help=what, description=what)
        action.add_argument("--redis", metavar="URL", required=True, help="the fleet's Redis/Valkey URL")
        action.add_argument("--prefix", default="asgi_mcp", help="the fleet's key prefix (default: asgi_mcp)")
        if name != "list":
            action.add_argument("--label", required=True, help="the tenant's label (its id)")
        if name == "add":
            action.add_argument("--plan", required=True, help="the plan each worker resolves to a server")
        if name in ("add", "rotate"):
            action.add_argument("--expires-in", type=float, default=None, metavar="SECONDS", help="the token's life")
        if name == "rotate":
            action.add_argument("--grace", type=float, default=300.0, help="seconds the old tokens still work")


async def run_tokens(args: argparse.Namespace, say: Any) -> None:
    secret = os.environ.get(SECRET_VARIABLE, "").encode()
    if len(secret) < 32:
        raise ConfigurationError(f"{SECRET_VARIABLE} must hold the fleet's secret: 32 bytes or more")
    store: Any = tenant_store_from_url(args.redis, secret=secret, prefix=args.prefix)
    now = time.time()
    async with store:
        if args.action == "list":
            for line in _listing(await store.snapshot(), now):
                say(line)
            return
        label: str = args.label
        if args.action == "remove":
            if await store.remove(label, policy="close", drain_timeout=0.0) is None:
                raise ConfigurationError(f"no tenant labelled {label!r}")
            say(f"removed {label}")
            return
        token = "sk-" + secrets.token_urlsafe(32)
        not_after = now + args.expires_in if args.expires_in is not None else None
        credential = Credential(digest=store.digest(token), tenant_id=label, not_after=not_after)
        if args.action == "add":
            try:
                await store.add(TenantRecord(tenant_id=label, label=label, plan=args.plan), credential)
            except TenantConflict as conflict:
                raise ConfigurationError(str(conflict)) from None
        else:
            await _rotate(store, label, credential, now + args.grace)
        say(f"{args.action} {label}: token (shown once) {token}")


async def _rotate(store: Any, label: str, new: Credential, grace_ends: float) -> None:
    snapshot: TenantSnapshot = await store.snapshot()
    old = [c for c in snapshot.credentials if c.tenant_id == label]
    if await store.set_credential(new) is None:
        raise ConfigurationError(f"no tenant labelled {label!r}")
    for credential in old:
        ends = grace_ends if credential.not_after is None else min(credential.not_after, grace_ends)
        await store.set_credential(replace(credential, not_after=ends))


def _listing(snapshot: TenantSnapshot, now: float) -> list[str]:
    lines: list[str] = []
    for record in sorted(snapshot.records, key=lambda r: r.tenant_id):
        held = [c for c in snapshot.credentials if c.tenant_id == record.tenant_id and not c.expired(now)]
        ends = [c.not_after for c in held if c.not_after is not None]
        expiry = (
            "never"
            if len(ends) < len(held) or not ends
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(ends)))
        )
        lines.append(f"{record.tenant_id}\tplan={record.plan}\ttokens={len(held)}\texpires={expiry}")
    return lines
