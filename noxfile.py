"""Developer and CI sessions. `./dev <session>` runs one on a fresh machine (it bootstraps nox)."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

TEST_DEPS = ["pytest>=8.3", "hypothesis>=6.100", "trio>=0.27", "httpx>=0.28", "h11>=0.16", "uvicorn>=0.31", "hypercorn>=0.17"]
LINT_DEPS = ["ruff>=0.8", "mypy>=1.13", "pyright>=1.1.390", "trio>=0.27", "exceptiongroup>=1.2", "joserfc>=1.0", "hypercorn>=0.17"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on asyncio and trio: unit, in-memory ASGI, real servers, TS client, conformance."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("pytest", "-p", "anyio", "-q", *session.posargs, env={"PYTHONFAULTHANDLER": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, strict mypy and strict pyright on the package."""
    session.install("-e", ".", *LINT_DEPS)
    session.run("ruff", "check", "asgi_mcp")
    session.run("ruff", "format", "--check", "asgi_mcp")
    session.run("mypy", "asgi_mcp")
    session.run("pyright", "asgi_mcp")


@nox.session
def demo(session: nox.Session) -> None:
    """`asgi-mcp demo`: a multi-tenant MCP server on http://127.0.0.1:8000/mcp, three tokens with their own tools."""
    session.install("-e", ".[server]")
    port = os.environ.get("PORT", "8000")
    session.run("asgi-mcp", "demo", "--port", port, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput of McpApp against the SDK's own transport and a raw-ASGI floor (not a test)."""
    session.install("-e", ".", "uvicorn>=0.31", "hypercorn>=0.17", "trio>=0.27", "h11>=0.16", "httpx>=0.28")
    session.run("python", "-m", "benchmarks.run", *session.posargs)
