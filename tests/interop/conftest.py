"""The interop tests' shared fixture: the pinned Node.js packages (tests/interop/node_env.py)."""

from __future__ import annotations

import pytest
from node_env import NodeEnv, NodeUnavailable, ensure_node_env


@pytest.fixture(scope="session")
def node_env() -> NodeEnv:
    try:
        return ensure_node_env()
    except NodeUnavailable as exc:
        pytest.fail(f"interop tests need Node.js and the pinned npm packages: {exc}", pytrace=False)
