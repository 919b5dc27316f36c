"""The official MCP conformance suite against the fixture served by `McpApp`, on both backends.

Four runs per backend (0.1.16 active and `--suite all`; 0.2.0-alpha.12 for 2025-11-25 and
2026-07-28); `.ci/conformance.sh` fails on any failed check *and* on any warning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.node, pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            # Not listening yet: block on the process for a moment instead of spinning.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
    raise TimeoutError(f"server did not listen on {port} within {timeout}s")


@pytest.fixture(
    params=[
        "asyncio-uvicorn",
        "trio-hypercorn",
        "asyncio-builtin-h11",
        "asyncio-builtin-httptools",
        "trio-builtin-h11",
        "trio-builtin-httptools",
    ]
)
def fixture_url(request: pytest.FixtureRequest) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, str(ROOT / "tests/conformance/serve.py"), "--port", str(port)]
    if request.param.startswith("trio"):
        command.append("--trio")
    if "-builtin-" in request.param:
        command += ["--builtin", request.param.rsplit("-", 1)[1]]
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is needed to install the conformance suite")
def test_official_conformance_suite(fixture_url: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / ".ci/conformance.sh"), fixture_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "conformance: OK" in result.stdout
