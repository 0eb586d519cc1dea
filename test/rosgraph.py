"""Multi-process ROS test helpers (the graph driver itself is segpp_ros.rosgraph).

Every ROS test must run in a private network namespace with only loopback (`make test`
runs pytest under tools/netns-run); `require_isolated_network` fails a test otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from segpp_ros.rosenv import is_isolated_network
from segpp_ros.rosgraph import NodeProcess, Probe, diagnostics_values  # noqa: F401 -- re-exported for tests

REPO = Path(__file__).resolve().parent.parent


def require_isolated_network() -> None:
    if not is_isolated_network() or os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        pytest.fail("ROS tests start DDS and must run in a private network namespace with localhost discovery: "
                    "run them with `make test` or `tools/netns-run .venv/bin/python -m pytest ...`")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, node: NodeProcess | None = None,
             every: Callable[[], None] | None = None, period: float = 0.25) -> Any:
    """Poll until condition() is truthy; call every() each period (e.g. re-publish a frame)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if node is not None and not node.alive():
            pytest.fail(f"the node died while waiting for {what}:\n{node.output()[-3000:]}")
        if every is not None:
            every()
        time.sleep(period)
    log = f"\nnode log:\n{node.output()[-3000:]}" if node is not None else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{log}")


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
