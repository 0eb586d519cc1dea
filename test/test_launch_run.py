"""`ros2 launch segpp segpp.launch.py` as users run it: Ctrl-C, respawn after a crash, no respawn
after a refusal. Each launch is a process group of its own (segpp_ros.harness.graph.ProcessGroup),
inside the tests' private network namespace."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from segpp_ros.ros.env import ensure_ament_prefix
from segpp_ros.harness.graph import ProcessGroup

from .rosgraph import ROS2, needs_ros2_cli, wait_for

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

START_TIMEOUT = 120.0


@pytest.fixture
def launch(tmp_path):
    """Start `ros2 launch segpp segpp.launch.py ARGS...`; every group started is killed at the end."""
    needs_ros2_cli()
    ensure_ament_prefix()
    groups: list[ProcessGroup] = []

    def start(*args: str) -> ProcessGroup:
        group = ProcessGroup([str(ROS2), "launch", "segpp", "segpp.launch.py", *args],
                             tmp_path / f"launch_{len(groups)}.log", cwd=tmp_path,
                             env={"AMENT_PREFIX_PATH": os.environ["AMENT_PREFIX_PATH"], "ROS_LOG_DIR": str(tmp_path)})
        groups.append(group)
        return group
    yield start
    for group in groups:
        group.close()


def node_pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"\[segpp_node-\d+\]: process started with pid \[(\d+)\]", output)]


def segmenting(group: ProcessGroup, count: int = 1) -> bool:
    return group.output().count("segmenting /") >= count


def quoted_node_lines() -> list[str]:
    """The node's log lines in docs/node.md's quoted launch session (what follows '[segpp]: ')."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "node.md").read_text()
    session = text.split("$ ros2 launch segpp segpp.launch.py image:=/camera/image\n", 1)[1].split("```", 1)[0]
    return [line.split("[segpp]: ", 1)[1] for line in session.splitlines() if "[segpp]: " in line]


def test_ctrl_c_ends_launch_and_node_cleanly(launch):
    group = launch("image:=/camera/image")
    wait_for(lambda: segmenting(group) and "QoS: " in group.output(), START_TIMEOUT, "the node to start under launch")
    # the start-up the docs quote is what the node prints (timings aside; the merge line needs ros2 param set)
    printed = re.sub(r"\x1b\[[0-9;]*m", "", group.output())
    # what happens later (a parameter set, a compilation finished in the background) is not waited for
    quoted = [q for q in quoted_node_lines() if not q.startswith(("merge ->", "OpenVINO compiled"))]
    assert len(quoted) == 5, quoted
    for line in quoted:
        pattern = re.sub(r"[0-9]+\\\.[0-9]+\\ s", r"[0-9.]+\\ s", re.escape(line))
        assert re.search(r"\[segpp\]: " + pattern + "$", printed, re.M), (line, printed[-3000:])
    group.interrupt()                                # the terminal's Ctrl-C: launch and node both get it
    code = group.wait(15)
    out = group.output()
    assert code == 0, f"ros2 launch exit code {code}:\n{out[-3000:]}"
    assert "process has finished cleanly" in out, out[-3000:]
    for words in ("Traceback", "process has died", "context is invalid"):
        assert words not in out, out[-3000:]


def test_a_killed_node_is_started_again(launch):
    group = launch("image:=/cam/image", "respawn_delay:=0.5")
    wait_for(lambda: segmenting(group), START_TIMEOUT, "the node to start under launch")
    (first,) = node_pids(group.output())
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: segmenting(group, 2), START_TIMEOUT, "the node to be started again")
    out = group.output()
    assert "the node exited with code -9; starting it again" in out
    assert len(node_pids(out)) == 2 and node_pids(out)[1] != first
    group.interrupt()
    assert group.wait(15) == 0, group.output()[-3000:]


def test_a_node_that_refuses_to_start_is_not_respawned(launch, tmp_path):
    group = launch("weights:=/nonexistent/model.pth", "respawn_delay:=0.2")
    code = group.wait(START_TIMEOUT)                   # nothing left to run: launch ends by itself
    out = group.output()
    assert code is not None, "ros2 launch kept running after the node refused to start"
    assert "cannot load the segmentation weights: /nonexistent/model.pth" in out
    assert "exit code 78" in out and len(node_pids(out)) == 1 and "starting it again" not in out, out[-3000:]
    assert "Traceback" not in out


def test_the_cameras_argument_gives_each_camera_its_input(launch):
    # comma-separated, spaces allowed; relative names, so the namespace applies to each. RViz2
    # is not installed here: rviz:=true says so and the node runs on
    group = launch("cameras:=front, rear", "namespace:=robot", "rviz:=true")
    wait_for(lambda: segmenting(group), START_TIMEOUT, "the node to start under launch")
    assert "segmenting /robot/front/image, /robot/rear/image (raw)" in group.output(), group.output()[-3000:]
    assert "rviz:=true but RViz2 is not installed" in group.output()
    group.interrupt()
    assert group.wait(15) == 0, group.output()[-3000:]


def test_backend_openvino_through_launch(launch):
    """backend:=openvino: the node compiles its model in the background while the first frames run
    in PyTorch, then labels come from the compiled model; /diagnostics says which."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from segpp_ros.training.data.scenes import render_scene

    from .rosgraph import Probe, diagnostics_values, make_frame

    group = launch("image:=/ov_cam/image", "backend:=openvino", "device:=cpu")
    probe = Probe("segpp_ov_launch_probe")
    try:
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.subscribe(Image, "/segpp/label", 10)
        camera = probe.node.create_publisher(Image, "/ov_cam/image", 10)
        wait_for(lambda: segmenting(group), START_TIMEOUT, "the node to start under launch", group)
        assert "openvino" in group.output(), group.output()[-3000:]           # the describe() line
        scene = render_scene(10_000_557, 120, 160).image

        def compiled() -> bool:
            camera.publish(make_frame(probe, scene))         # frames of this size, in PyTorch meanwhile
            backend = (diagnostics_values(probe, "/segpp") or {}).get("backend", "")
            done = re.match(r"openvino \((\d+) compiled, 0 compiling", backend)
            return bool(done) and int(done.group(1)) >= 1
        wait_for(compiled, START_TIMEOUT, "the node's compiled model", group, period=1.0)
        msg = make_frame(probe, scene)
        wait_for(lambda: any(m.header.frame_id == msg.header.frame_id for m in probe.messages("/segpp/label")),
                 60, "a label from the compiled model", group, every=lambda: camera.publish(msg))
        assert "OpenVINO compiled input" in group.output()
    finally:
        probe.close()
    group.interrupt()
    assert group.wait(15) == 0, group.output()[-3000:]
