"""Enterprise onboarding: customers, plans, zero-downtime plan upgrades, offboarding.

    python examples/enterprise_onboarding.py [--trio]

`upgrade_customer` replaces the customer's server with `update_token(..., policy="drain")`: a
session that is open during the upgrade keeps the old plan's server until it ends (or the drain
timeout passes), while every new session gets the new plan at once. Nothing is dropped mid-call.
`offboard_customer` removes the token and closes its sessions. Starts on a free port, exercises
all of it with the MCP SDK's own client, and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer

from asgi_mcp import PerBearerServer, create_per_bearer_server

PLAN_TOOLS = {
    "basic": ["company_info"],
    "premium": ["analytics", "company_info"],
    "enterprise": ["admin_controls", "analytics", "company_info"],
}


def customer_server(company: str, plan: str) -> MCPServer:
    mcp = MCPServer(f"{company}-tools", version=plan)

    @mcp.tool()
    def company_info() -> str:
        """The company and its plan."""
        return f"Company: {company}; plan: {plan}"

    if plan in ("premium", "enterprise"):

        @mcp.tool()
        def analytics(metric: str) -> str:
            """Advanced analytics."""
            return f"Analytics for {metric}: [premium data]"

    if plan == "enterprise":

        @mcp.tool()
        def admin_controls() -> str:
            """Enterprise administration."""
            return "Enterprise admin dashboard accessible"

    return mcp


@dataclass
class Customer:
    token: str
    company: str
    plan: str
    created_at: float = field(default_factory=time.time)


class EnterpriseServicesAPI:
    def __init__(self) -> None:
        self.mcp_server: PerBearerServer = create_per_bearer_server(port=0)
        self.customers: dict[str, Customer] = {}
        self._setup_monitoring()

    def onboard_customer(self, customer_id: str, company: str, plan: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        self.mcp_server.add_token(token, lambda: customer_server(company, plan), label=customer_id)
        self.customers[customer_id] = Customer(token, company, plan)
        info = self.mcp_server.server_info()
        url = info.url if info is not None else "(not started)"
        # What the customer puts in their MCP client (VS Code mcp.json shape).
        config = {"servers": {company: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}}}
        return {"token": token, "endpoint": url, "capabilities": PLAN_TOOLS[plan], "client_config": config}

    def upgrade_customer(self, customer_id: str, new_plan: str) -> dict[str, Any]:
        customer = self.customers[customer_id]
        # Zero downtime: live sessions finish on the old plan, new sessions get the new one.
        self.mcp_server.update_token(
            customer.token, lambda: customer_server(customer.company, new_plan), policy="drain", drain_timeout=60
        )
        customer.plan = new_plan
        return {"success": True, "new_capabilities": PLAN_TOOLS[new_plan]}

    def offboard_customer(self, customer_id: str) -> bool:
        customer = self.customers.pop(customer_id, None)
        if customer is None:
            return False
        self.mcp_server.remove_token(customer.token, policy="close")
        return True

    def system_stats(self) -> dict[str, Any]:
        by_plan: dict[str, int] = {}
        for customer in self.customers.values():
            by_plan[customer.plan] = by_plan.get(customer.plan, 0) + 1
        return {"server": self.mcp_server.stats(), "customers": {"total": len(self.customers), "by_plan": by_plan}}

    def _setup_monitoring(self) -> None:
        on = self.mcp_server.on
        on("server_registered", lambda e: print(f"  [{e.tenant_id}] server {e.server_name} {e.server_version}"))
        on("session_created", lambda e: print(f"  [{e.tenant_id}] session started on {e.server_name}"))
        on("session_ended", lambda e: print(f"  [{e.tenant_id}] session ended: {e.reason}"))
        on("token_updated", lambda e: print(f"  [{e.tenant_id}] plan changed (policy {e.policy})"))
        on("tool_called", lambda e: print(f"  [{e.tenant_id}] {e.tool_name} in {e.duration * 1000:.1f} ms"))


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP session (initialize handshake) whose requests carry `Authorization: Bearer <token>`."""
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        yield client


async def tool_names(client: Client) -> list[str]:
    return sorted(tool.name for tool in (await client.list_tools()).tools)


async def main() -> None:
    api = EnterpriseServicesAPI()
    async with api.mcp_server:
        acme = api.onboard_customer("acme-corp", "ACME Corporation", "basic")
        startup = api.onboard_customer("startup-inc", "Startup Inc", "premium")
        print(f"onboarded acme-corp ({acme['capabilities']}) and startup-inc ({startup['capabilities']})")
        url = acme["endpoint"]

        async with connect(url, acme["token"]) as before_upgrade:
            assert await tool_names(before_upgrade) == PLAN_TOOLS["basic"]
            print("upgrade:", api.upgrade_customer("acme-corp", "enterprise"))

            # The session opened before the upgrade keeps the basic plan (drained, not dropped)...
            assert await tool_names(before_upgrade) == PLAN_TOOLS["basic"]
            await before_upgrade.call_tool("company_info", {})
            # ...while a session opened now gets the enterprise plan.
            async with connect(url, acme["token"]) as after_upgrade:
                tools = await tool_names(after_upgrade)
                assert tools == PLAN_TOOLS["enterprise"], tools
                answer = await after_upgrade.call_tool("admin_controls", {})
                assert not answer.is_error
            print(f"old session: {PLAN_TOOLS['basic']}; new session: {tools}")

        async with connect(url, startup["token"]) as client:
            assert await tool_names(client) == PLAN_TOOLS["premium"]
            await client.call_tool("analytics", {"metric": "signups"})
        assert api.offboard_customer("startup-inc")
        assert not api.offboard_customer("startup-inc")
        print(f"system stats: {api.system_stats()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    # Before the SDK's MCPServer configures logging: keep the output to what this example prints.
    logging.basicConfig(level=logging.WARNING)
    anyio.run(main, backend="trio" if parser.parse_args().trio else "asyncio")
