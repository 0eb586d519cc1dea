"""The managed node (`ros2 launch segpp segpp.launch.py lifecycle:=true`) driven with
`ros2 lifecycle set/get` through every transition, as a user or a lifecycle manager does."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from segpp_ros.harness.graph import ProcessGroup

from .rosgraph import Probe, diagnostics_status, needs_ros2_cli, wait_for
from .test_ros2_cli import ROS2, SCENE, _env, cli, params_file, ros2

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NODE = "/segpp"
CAMERA = "/lc_cam/image"
# PyTorch: the memory checks below measure what the models hold; OpenVINO's compilations in the
# background would come and go on their own schedule (the backend has tests of its own)
PARAMS = {"max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.5, "pose.enable": False,
          "device": "cpu", "weights": "/nonexistent/model.pth", "backend": "torch"}
START_TIMEOUT = 120.0


def lifecycle(tmp, verb: str, *args: str) -> str:
    return cli(tmp, "lifecycle", verb, NODE, *args)


@pytest.fixture
def managed(tmp_path):
    """A managed node under ros2 launch (weights that do not load, at first), a camera at 5 Hz,
    a probe on its labels and /diagnostics."""
    needs_ros2_cli()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image
    from segpp_ros.ros.env import ensure_ament_prefix

    ensure_ament_prefix()
    group = ProcessGroup([str(ROS2), "launch", "segpp", "segpp.launch.py", f"image:={CAMERA}", "lifecycle:=true",
                          f"params_file:={params_file(tmp_path, PARAMS)}"], tmp_path / "launch.log",
                         env=_env(tmp_path), cwd=tmp_path)
    probe = Probe("segpp_lc_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.subscribe(Image, f"{NODE}/label")
    camera = probe.publisher(Image, CAMERA)
    stop = threading.Event()

    def stream() -> None:
        msg = rgb_to_image(SCENE, Header(frame_id="lc_camera"), "rgb8")
        while not stop.is_set():
            msg.header.stamp = probe.now_msg()
            camera.publish(msg)
            stop.wait(0.2)
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_for(lambda: diagnostics_status(probe, NODE), START_TIMEOUT, "the managed node's first diagnostics", group)
        yield group, probe, tmp_path
    finally:
        stop.set()
        streamer.join(5)
        probe.close()
        group.interrupt()
        group.wait(20)
        group.close()
        ros2(tmp_path, "daemon", "stop")


def state(tmp) -> str:
    return lifecycle(tmp, "get").strip()


def rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def labels(probe: Probe) -> int:
    return len(probe.messages(f"{NODE}/label"))


def test_every_transition(managed):
    group, probe, tmp = managed
    assert state(tmp).startswith("unconfigured")
    assert labels(probe) == 0
    # configure fails on the weights: still unconfigured, the reason logged and on /diagnostics
    assert "Transitioning failed" in lifecycle(tmp, "set", "configure")
    assert state(tmp).startswith("unconfigured")
    wait_for(lambda: "configure failed: cannot load the segmentation weights: /nonexistent/model.pth"
             in diagnostics_status(probe, NODE)[1], 30, "the configure failure on /diagnostics")
    assert "configure failed: cannot load the segmentation weights" in group.output()
    # weights are changeable while unconfigured (read-only for the plain node)
    out = cli(tmp, "param", "set", NODE, "weights", "''")
    assert "Set parameter successful" in out, out
    assert "Transitioning successful" in lifecycle(tmp, "set", "configure")
    assert state(tmp).startswith("inactive")
    out = cli(tmp, "param", "set", NODE, "weights", "/tmp/other.pth")
    assert "Setting parameter failed" in out and "unconfigured" in out, out
    wait_for(lambda: diagnostics_status(probe, NODE)[1].startswith("inactive"), 30, "inactive on /diagnostics")
    assert labels(probe) == 0                                           # configured, not publishing
    # activate: labels flow
    assert "Transitioning successful" in lifecycle(tmp, "set", "activate")
    assert state(tmp).startswith("active")
    wait_for(lambda: labels(probe) >= 3, 60, "labels once active")
    # deactivate: publishing stops at once
    assert "Transitioning successful" in lifecycle(tmp, "set", "deactivate")
    after = labels(probe)
    wait_for(lambda: diagnostics_status(probe, NODE)[1].startswith("inactive"), 30, "inactive again")
    time.sleep(1.0)                                                     # five camera frames
    assert labels(probe) - after <= 1, "labels kept coming after deactivate"
    # cleanup frees the models (their memory leaves the process); configure + activate bring them back
    pid = int(re.search(r"process started with pid \[(\d+)\]", group.output()).group(1))
    configured_mb = rss_mb(pid)
    assert "Transitioning successful" in lifecycle(tmp, "set", "cleanup")
    assert state(tmp).startswith("unconfigured")
    wait_for(lambda: diagnostics_status(probe, NODE)[1].startswith("unconfigured"), 30, "unconfigured after cleanup")
    cleaned_mb = rss_mb(pid)
    assert cleaned_mb < configured_mb - 20, (configured_mb, cleaned_mb)
    assert "Transitioning successful" in lifecycle(tmp, "set", "configure")
    assert rss_mb(pid) < configured_mb + 20                              # a cycle leaves nothing behind
    assert "Transitioning successful" in lifecycle(tmp, "set", "activate")
    count = labels(probe)
    wait_for(lambda: labels(probe) >= count + 3, 60, "labels after the second activation")
    # shutdown from active: the node process ends cleanly, and with it ros2 launch
    assert "Transitioning successful" in lifecycle(tmp, "set", "shutdown")
    code = group.wait(30)
    out = group.output()
    assert code == 0 and "process has finished cleanly" in out and "Traceback" not in out, out[-3000:]


def test_shutdown_from_unconfigured(managed):
    group, probe, tmp = managed
    assert "Transitioning successful" in lifecycle(tmp, "set", "shutdown")
    assert group.wait(30) == 0, group.output()[-3000:]


def test_autostart_configures_and_activates(tmp_path):
    needs_ros2_cli()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile

    from segpp_ros.ros.env import ensure_ament_prefix

    ensure_ament_prefix()
    params = params_file(tmp_path, {**PARAMS, "weights": ""})
    group = ProcessGroup([str(ROS2), "launch", "segpp", "segpp.launch.py", f"image:={CAMERA}", "lifecycle:=true",
                          "autostart:=true", f"params_file:={params}"], tmp_path / "launch.log", env=_env(tmp_path),
                         cwd=tmp_path)
    probe = Probe("segpp_autostart_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    try:
        wait_for(lambda: (diagnostics_status(probe, NODE) or (0, ""))[1] == "segmenting", START_TIMEOUT,
                 "an active node")
        assert state(tmp_path).startswith("active")
        group.interrupt()
        assert group.wait(20) == 0
    finally:
        probe.close()
        out = group.output()
        group.close()
        ros2(tmp_path, "daemon", "stop")
    assert "Traceback" not in out, out[-3000:]
