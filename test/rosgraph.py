"""Multi-process ROS test helpers (the graph driver itself is segpp_ros.harness.graph).

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

import numpy as np
import pytest

from segpp_ros.ros.env import is_isolated_network
from segpp_ros.harness.graph import (  # noqa: F401 -- re-exported
    NodeProcess,
    Probe,
    diagnostics_status,
    diagnostics_values,
    set_parameters,
)

from .conftest import one_thread

REPO = Path(__file__).resolve().parent.parent
ROS2 = Path(sys.prefix) / "bin" / "ros2"


def rclpy_version() -> str:
    from importlib.metadata import version

    return version("ros-rclpy")


def needs_ros2_cli() -> None:
    """DDS stays on this host; skip, saying why, where this venv has no `ros2` command or launch:
    the Jazzy venv has none (../shared/ros2-tools holds Kilted builds of them), so the tests that
    go through `ros2 launch` / `ros2 lifecycle` / `ros2 topic` run on Kilted only."""
    require_isolated_network()
    if ROS2.exists():
        return
    if rclpy_version().startswith("7."):
        pytest.skip(f"ROS 2 Jazzy (rclpy {rclpy_version()}): the ros2 command line and launch of "
                    "../shared/ros2-tools are Kilted builds and are not installed in .venv-jazzy; this test runs "
                    "on Kilted (.venv)")
    pytest.skip("no ros2 command in this environment (make venv installs it from ../shared/ros2-tools)")


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


def refused_start(log_dir: Path, params: dict[str, Any], name: str, env: dict[str, str] | None = None,
                  alone: bool = False) -> str:
    """Start a node that must refuse to start; assert it exits with code 78 (EX_CONFIG) and no traceback
    within two minutes, and return its log. ``alone``: ``params`` is the only params file (not
    stacked on config/segpp.yaml, whose value rcl keeps when two files disagree on a type)."""
    from segpp_ros.harness.graph import write_params_file

    only = write_params_file(log_dir / f"{name}_only.yaml", params) if alone else None
    node = NodeProcess(log_dir, params, {}, name=name, env=env, params_file=only)
    try:
        node.proc.wait(120)
    finally:
        node.stop()
    log = node.output()
    from segpp_ros.ros.process import EXIT_REFUSED

    assert node.proc.returncode == EXIT_REFUSED == 78 and "Traceback" not in log, log[-2000:]
    return log


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


_frame_counter = [0]


def make_frame(probe: Probe, image: np.ndarray, as_encoding: str = "rgb8", **overrides):
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
    """The output on ``topic`` for exactly the request ``msg`` (frame_id and stamp)."""
    for out in probe.messages(topic):
        if out.header.frame_id == msg.header.frame_id and out.header.stamp == msg.header.stamp:
            return out
    return None


def roundtrip(graph, msg, topic: str = "/segpp/label", timeout: float = 60.0, resend_s: float = 0.5):
    """Publish msg (re-publishing every ``resend_s`` while unanswered: best-effort may drop) and
    return the answer.

    Every send is a request of its own: a fresh stamp and its own frame_id (``<frame_id>#<n>``).
    The answer must match one of them exactly; ``msg.header`` is then set to the request that
    was answered, so callers compare it (and look up its other outputs) without a race against
    a later re-send."""
    node, probe = graph
    base = msg.header.frame_id
    sent: dict[str, object] = {}

    def publish() -> None:
        msg.header.frame_id = f"{base}#{len(sent)}"
        msg.header.stamp = probe.now_msg()  # a re-sent frame is a new frame, not a stale one
        sent[msg.header.frame_id] = msg.header.stamp
        probe.camera.publish(msg)

    def answered():
        for out in probe.messages(topic):
            stamp = sent.get(out.header.frame_id)
            if stamp is not None and out.header.stamp == stamp:
                return out
        return None

    publish()
    sent_at = [time.monotonic()]

    def resend() -> None:
        if time.monotonic() - sent_at[0] >= resend_s:
            sent_at[0] = time.monotonic()
            publish()
    out = wait_for(answered, timeout, f"an answer on {topic}", node, every=resend, period=0.05)
    msg.header.frame_id, msg.header.stamp = out.header.frame_id, sent[out.header.frame_id]
    return out


def set_params(probe: Probe, node: str = "segpp", **values):
    """Set parameters through the SetParameters service (what `ros2 param set` calls);
    ``merge__preset`` names ``merge.preset``."""
    return set_parameters(probe, node, {k.replace("__", "."): v for k, v in values.items()})


def get_param(probe: Probe, name: str, node: str = "segpp"):
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(probe.node, node)
    future = client.get_parameters([name])
    wait_for(future.done, 30, "the GetParameters response")
    return future.result().values[0]


def send_until(graph, msg, condition: Callable[[], Any], what: str, timeout: float = 60.0, period: float = 0.25):
    """Publish msg with a fresh stamp every ``period`` until condition() holds (best effort may
    drop any one send); returns condition()'s value."""
    node, probe = graph

    def publish() -> None:
        msg.header.stamp = probe.now_msg()
        probe.camera.publish(msg)
    publish()
    return wait_for(condition, timeout, what, node, every=publish, period=period)


def counter(probe: Probe, key: str, node_name: str = "/segpp") -> int:
    """A counter of the node's latest diagnostics (0 while absent)."""
    values = diagnostics_values(probe, node_name) or {}
    return int(values.get(key, 0))


def reference_labels(image: np.ndarray, max_side: int, merge="none", weights=None,
                     precision: str = "auto") -> np.ndarray:
    """What the inference core computes for the same image and settings, on one thread like the
    nodes of the tests (so the labels are bit-identical)."""
    from segpp_ros.inference import Segmenter

    with one_thread():
        return Segmenter(weights, device="cpu", merge=merge, max_side=max_side, precision=precision)(image).labels


def labels_of(msg) -> np.ndarray:
    """The class IDs of a mono8/mono16 label image message, row padding removed."""
    dtype = np.uint8 if msg.encoding == "mono8" else np.uint16
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.step // dtype().itemsize)[:, :msg.width]
