"""Multi-process ROS test helpers (the graph driver itself is segpp_ros.ros.graph).

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

from segpp_ros.ros.env import is_isolated_network
from segpp_ros.ros.graph import NodeProcess, Probe, diagnostics_values  # noqa: F401 -- re-exported for tests

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


def refused_start(log_dir: Path, params: dict[str, Any], name: str) -> str:
    """Start a node that must refuse to start; assert it exits with code 1 and no traceback
    within two minutes, and return its log."""
    node = NodeProcess(log_dir, params, {}, name=name)
    try:
        node.proc.wait(120)
    finally:
        node.stop()
    log = node.output()
    assert node.proc.returncode == 1 and "Traceback" not in log, log[-2000:]
    return log


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


_frame_counter = [0]


def make_frame(probe: Probe, image: "np.ndarray", as_encoding: str = "rgb8", **overrides):
    """An Image with a fresh stamp and a unique frame_id, so its answer can be found."""
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image

    _frame_counter[0] += 1
    header = Header(stamp=probe.now_msg(), frame_id=f"cam_{_frame_counter[0]}")
    msg = rgb_to_image(image, header, as_encoding)
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def answer(probe: Probe, topic: str, msg) -> object | None:
    for out in probe.messages(topic):
        if out.header.frame_id == msg.header.frame_id:
            return out
    return None


def roundtrip(graph, msg, topic: str = "/segpp/label", timeout: float = 60.0):
    """Publish msg (re-publishing while unanswered: best-effort may drop) and return the answer."""
    node, probe = graph

    def publish() -> None:
        msg.header.stamp = probe.now_msg()  # a re-sent frame is a new frame, not a stale one
        probe.camera.publish(msg)
    return wait_for(lambda: answer(probe, topic, msg), timeout, f"an answer on {topic}", node,
                    every=publish, period=0.5)


def set_params(probe: Probe, node: str = "segpp", **values):
    """Set parameters through the SetParameters service (what `ros2 param set` calls)."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(probe.node, node)
    assert client.wait_for_services(timeout_sec=30), f"parameter services of /{node} not found"
    future = client.set_parameters([Parameter(k.replace("__", "."), value=v) for k, v in values.items()])
    wait_for(future.done, 30, "the SetParameters response")
    return future.result().results


def get_param(probe: Probe, name: str, node: str = "segpp"):
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(probe.node, node)
    future = client.get_parameters([name])
    wait_for(future.done, 30, "the GetParameters response")
    return future.result().values[0]
