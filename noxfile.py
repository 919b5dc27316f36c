"""Developer and CI sessions. `./dev <session>` runs one on a fresh machine (it bootstraps nox)."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

# One source of truth: the dependency groups in pyproject.toml.
PYPROJECT = nox.project.load_toml("pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")
DOCS_DEPS = nox.project.dependency_groups(PYPROJECT, "docs")
LINT_DEPS = nox.project.dependency_groups(PYPROJECT, "lint")
BENCH_DEPS = nox.project.dependency_groups(PYPROJECT, "bench")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on asyncio and trio: unit, in-memory ASGI, real servers, TS client, conformance."""
    # Every extra: the JWT verifier (joserfc), the one-call server (hypercorn, trio), the built-in
    # server's httptools parser (`fast`) and the Redis stores (coredis, against a real redis-server the
    # tests start) are tested too.
    session.install("-e", ".[jwt,server,redis,fast]", *TEST_DEPS)
    # One worker per core (xdist); `worksteal` rebalances as the slow system tests finish unevenly.
    workers = ("-n", "auto", "--dist", "worksteal")
    session.run("pytest", "-p", "anyio", "-q", *workers, *session.posargs, env={"PYTHONFAULTHANDLER": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on everything; strict mypy on the package and the test kit, strict pyright on the package; the
    import-linter layer contracts."""
    # The test kit drives real servers and clients: what it imports beyond the extras.
    session.install("-e", ".[jwt,server,redis,fast,uvicorn]", "pytest>=8.3", "httpx>=0.28", *LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "--exclude", "*.md", ".")
    session.run("mypy", "asgi_mcp", "tests/kit")
    session.run("pyright", "asgi_mcp")
    session.run("lint-imports")  # the layer contracts in pyproject.toml


@nox.session
def demo(session: nox.Session) -> None:
    """`asgi-mcp demo`: a multi-tenant MCP server on http://127.0.0.1:8000/mcp, three tokens with their own tools."""
    session.install("-e", ".[server]")
    port = os.environ.get("PORT", "8000")
    session.run("asgi-mcp", "demo", "--port", port, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput of McpApp against the SDK's own transport and a raw-ASGI floor (not a test).

    With the `redis` extra: `--fleet` runs McpApp on a redis-server the harness starts itself (on PATH).
    """
    session.install("-e", ".[redis]", *BENCH_DEPS)
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml), built with warnings as errors into site/ (gitignored)."""
    session.install("-e", ".", *DOCS_DEPS)
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})
