"""The user's own commands against the running package: ros2 launch with its arguments, ros2 param,
ros2 topic, ros2 run. Each command runs as users run it (a process group of its own, inside the
tests' private network namespace); every group started is ended, and the ros2 daemon stopped."""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from segpp_ros.ros.env import ensure_ament_prefix
from segpp_ros.harness.graph import ProcessGroup, write_params_file
from segpp_ros.training.data.scenes import render_scene

from .rosgraph import ROS2, Probe, diagnostics_status, needs_ros2_cli, wait_for

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NODE = "/robot/segpp"
CAMERA = "/cli_cam/image"
# persons in view at max_side 256, so keypoints flow too
SCENE = render_scene(10_000_910, 240, 320).image
PARAMS = {"max_side": 256, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.5, "pose.min_box_area": 100,
          "pose.max_persons": 2, "device": "cpu"}
START_TIMEOUT = 120.0


def _env(tmp: Path) -> dict[str, str]:
    return {"AMENT_PREFIX_PATH": os.environ["AMENT_PREFIX_PATH"], "ROS_LOG_DIR": str(tmp)}


def ros2(tmp: Path, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    """One `ros2 ...` command to completion (its own process group, killed if it overruns)."""
    group = ProcessGroup([str(ROS2), *args], tmp / f"ros2_{time.monotonic_ns()}.log", env=_env(tmp), cwd=tmp)
    code = group.wait(timeout)
    out = group.output()
    group.close()
    assert code is not None, f"`ros2 {' '.join(args)}` still running after {timeout:.0f} s:\n{out[-2000:]}"
    return subprocess.CompletedProcess(args, code, out)


NOT_DISCOVERED = ("Node not found", "Could not determine the type", "not available", "Unable to find")


def cli(tmp: Path, verb: str, sub: str, *args: str) -> str:
    """`ros2 VERB SUB --no-daemon ARGS...` (no daemon outlives the test), with a longer discovery
    wait on each retry when the node or topic was not discovered yet (a loaded machine)."""
    for spin in (0.5, 2.0, 5.0):
        out = ros2(tmp, verb, sub, "--no-daemon", "--spin-time", str(spin), *args).stdout
        if not any(words in out for words in NOT_DISCOVERED):
            return out
    return out


def needs_ros2() -> None:
    """DDS stays on this host; skip (saying why) where there is no ros2 command."""
    needs_ros2_cli()
    ensure_ament_prefix()


def ended_cleanly(group: ProcessGroup) -> None:
    """Ctrl-C to the group; it must exit 0 without a traceback (and is then closed)."""
    group.interrupt()
    code = group.wait(20)
    out = group.output()
    group.close()
    assert code == 0 and "Traceback" not in out, f"exit code {code}:\n{out[-3000:]}"


def params_file(tmp: Path, values: dict) -> Path:
    return write_params_file(tmp / "my_segpp.yaml", values)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ros2cli")


@pytest.fixture(scope="module")
def launched(tmp):
    """`ros2 launch segpp segpp.launch.py` in a namespace with a params file, a camera streaming
    at 2 Hz, and a probe on /diagnostics."""
    needs_ros2()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image

    group = ProcessGroup([str(ROS2), "launch", "segpp", "segpp.launch.py", f"image:={CAMERA}", "namespace:=robot",
                          f"params_file:={params_file(tmp, PARAMS)}"], tmp / "launch.log", env=_env(tmp), cwd=tmp)
    probe = Probe("segpp_cli_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    camera = probe.node.create_publisher(Image, CAMERA, 10)              # a driver's default QoS
    # the driver's camera_info beside its image: found by image_transport's convention
    infos = probe.node.create_publisher(CameraInfo, CAMERA.rsplit("/", 1)[0] + "/camera_info", 10)
    stop = threading.Event()

    def stream() -> None:
        msg = rgb_to_image(SCENE, Header(frame_id="cli_camera"), "rgb8")
        info = CameraInfo(height=SCENE.shape[0], width=SCENE.shape[1], k=[200.0, 0, 159.5, 0, 200.0, 119.5, 0, 0, 1])
        while not stop.is_set():
            msg.header.stamp = info.header.stamp = probe.now_msg()
            info.header.frame_id = msg.header.frame_id
            infos.publish(info)
            camera.publish(msg)
            stop.wait(0.5)                            # 2 Hz: ros2 topic hz must see the camera's rate
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_for(lambda: (diagnostics_status(probe, NODE) or (0, "", {}))[2].get("frames_out", "0") != "0",
                 START_TIMEOUT, f"labels from {NODE} started by ros2 launch")
        yield group, probe
    finally:
        stop.set()
        streamer.join(5)
        probe.close()
        group.interrupt()
        code = group.wait(20)
        group.close()
        ros2(tmp, "daemon", "stop")
    assert code == 0, group.output()[-3000:]


def status(probe: Probe):
    return diagnostics_status(probe, NODE)


def test_launch_resolves_namespace_remapping_and_params_file(launched, tmp):
    group, probe = launched
    level, message, values = status(probe)
    assert values["input_topic"] == CAMERA and values["max_side"] == "256" and values["device"] == "cpu"
    out = cli(tmp, "topic", "echo", "--once", f"{NODE}/label",
               "--field", "header.frame_id")
    assert "cli_camera" in out, out[-2000:]


def test_param_list_get_describe_dump(launched, tmp):
    listed = cli(tmp, "param", "list", NODE)
    for name in ("merge.preset", "max_side", "pose.enable", "weights", "max_input_pixels"):
        assert re.search(rf"^\s+{re.escape(name)}$", listed, re.M), f"{name} not listed:\n{listed}"
    got = cli(tmp, "param", "get", NODE, "max_side")
    assert "Integer value is: 256" in got, got                         # from the params file
    described = cli(tmp, "param", "describe", NODE, "merge.preset")
    assert "one of: 'none', 'hq', 'fast', '2x2', 'downsample', 'custom'" in described, described
    described = cli(tmp, "param", "describe", NODE, "max_side")
    assert re.search(r"Min value:\s*0", described) and re.search(r"Max value:\s*8192", described), described
    described = cli(tmp, "param", "describe", NODE, "weights")
    assert "Read only: true" in described or "read only" in described.lower(), described
    import yaml

    dumped = yaml.safe_load(cli(tmp, "param", "dump", NODE))[NODE]["ros__parameters"]
    assert dumped["max_side"] == 256 and dumped["threads"] == 1 and dumped["merge"]["preset"] == "none"
    # an empty list parameter has a value (not "not set"), its type, and stays read-only
    assert dumped["cameras"] == [], dumped.get("cameras")
    described = cli(tmp, "param", "describe", NODE, "cameras")
    assert "string array" in described.lower() and "read only: true" in described.lower(), described
    assert dumped["pose"]["max_persons"] == 2 and dumped["merge"]["custom"] == ""
    # one parameter per model's custom merging keeps the list short enough to read; ROS's own
    # qos_overrides.* (read-only, one per topic and policy) come on top
    names = re.findall(r"^\s+(\S+)$", listed, re.M)
    ours = [n for n in names if not n.startswith("qos_overrides.")]
    # 45 once the 80 per-stage merge parameters became merge.custom; since then the compiled backend
    # (backend, backend_precompile) and depth (depth.*, points.*: six) came
    assert len(ours) <= 53 and not [n for n in names if ".stage" in n], names
    assert f"qos_overrides.{NODE}/label.publisher.reliability" in names, names


def test_param_set_live_invalid_and_read_only(launched, tmp):
    group, probe = launched
    out = cli(tmp, "param", "set", NODE, "merge.preset", "fast")
    assert "Set parameter successful" in out, out
    wait_for(lambda: status(probe)[2].get("merge_preset") == "fast", 30, "merge_preset fast on /diagnostics")
    out = cli(tmp, "param", "set", NODE, "merge.preset", "turbo")
    assert "Setting parameter failed: merge.preset must be one of none, hq, fast, 2x2, downsample, custom" in out, out
    out = cli(tmp, "param", "set", NODE, "weights", "/tmp/x.pth")
    assert "Setting parameter failed" in out and "read-only" in out.lower(), out
    out = cli(tmp, "param", "set", NODE, "max_side", "99999")
    assert "Setting parameter failed" in out, out
    # a custom configuration as one string: ros2 param set guesses the type with YAML (and a bare
    # mapping crashes it), so the value is quoted once more for YAML, as docs/parameters.md says
    custom = "{stages: [{kv: {mode: bsm, ratio: 0.6, cell: [2, 2]}}, {}, {}, {}]}"
    assert "Set parameter successful" in cli(tmp, "param", "set", NODE, "merge.custom", f"'{custom}'")
    out = cli(tmp, "param", "set", NODE, "merge.custom", "'{stages: [{kv: {mode: bsm, ratio: 2}}, {}, {}, {}]}'")
    assert "Setting parameter failed: merge.custom stages[0].kv.ratio must be a number in [0, 1), got 2" in out, out
    assert "Set parameter successful" in cli(tmp, "param", "set", NODE, "merge.preset", "custom")
    wait_for(lambda: status(probe)[2].get("merge_preset") == "custom", 30, "merge_preset custom on /diagnostics")
    assert custom in cli(tmp, "param", "get", NODE, "merge.custom")
    assert "Set parameter successful" in cli(tmp, "param", "set", NODE,
                                              "merge.preset", "none")
    wait_for(lambda: status(probe)[2].get("merge_preset") == "none", 30, "merge_preset none again")


@pytest.mark.parametrize("topic,field,words", [
    ("label_info", "class_map", ["class_name='road'", "class_name='person'"]),
    ("palette", "model", ["MiT-B0"]),
    ("persons", "header.frame_id", ["cli_camera"]),
    ("camera_info", "width", ["320"]),
    ("keypoint_info", "names", ["nose", "left_ankle"]),
    ("keypoints", "header.frame_id", ["cli_camera"]),
])
def test_topic_echo_once(launched, tmp, topic, field, words):
    out = cli(tmp, "topic", "echo", "--once", f"{NODE}/{topic}",
               "--field", field)
    assert all(w in out for w in words), out[-2000:]


def test_topic_hz_is_the_camera_rate(launched, tmp):
    group = ProcessGroup([str(ROS2), "topic", "hz", "--spin-time", "5", "--window", "6", f"{NODE}/label"],
                         tmp / "hz.log", env=_env(tmp), cwd=tmp)
    try:
        wait_for(lambda: len(re.findall(r"average rate: ([\d.]+)", group.output())) >= 3, 90,
                 "three rate lines from ros2 topic hz")
    finally:
        group.interrupt()
        group.wait(10)
        out = group.output()
        group.close()
    rates = [float(r) for r in re.findall(r"average rate: ([\d.]+)", out)]
    assert 1.5 <= rates[-1] <= 2.5, f"label rate {rates} with the camera at 2 Hz"


def test_ros2_run_starts_the_node(tmp):
    needs_ros2()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile

    group = ProcessGroup([str(ROS2), "run", "segpp", "segpp_node", "--ros-args", "-r", "__node:=segpp_run",
                          "-p", "warmup_frames:=0", "-p", "pose.enable:=false", "-p", "diagnostics_period:=0.5",
                          "-p", "no_image_warning:=1.0"], tmp / "run.log", env=_env(tmp), cwd=tmp)
    probe = Probe("segpp_run_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    try:
        got = wait_for(lambda: diagnostics_status(probe, "/segpp_run"), START_TIMEOUT, "diagnostics of ros2 run", group)
        assert got[2]["input_topic"] == "/image"
    finally:
        probe.close()
        ended_cleanly(group)


def test_launch_arguments_weights_device_and_compressed_transport(tmp, tmp_path):
    """weights:=, device:= and transport:=compressed reach the node; labels come back on the
    namespaced topic for PNG frames on <image>/compressed."""
    needs_ros2()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from segpp_ros.model import build_model, save_model
    from segpp_ros.ros.conversions import rgb_to_compressed

    from .conftest import TINY
    from .rosgraph import labels_of, reference_labels

    weights = tmp_path / "tiny.safetensors"
    save_model(build_model(TINY, num_classes=7).eval(), weights)
    params = params_file(tmp_path, {"threads": 1, "warmup_frames": 0, "diagnostics_period": 0.5, "max_side": 128,
                                    "pose.enable": False})
    group = ProcessGroup([str(ROS2), "launch", "segpp", "segpp.launch.py", "image:=/zc/image", "namespace:=zc",
                          f"params_file:={params}", f"weights:={weights}", "device:=cpu", "transport:=compressed"],
                         tmp_path / "launch_zc.log", env=_env(tmp_path), cwd=tmp_path)
    probe = Probe("segpp_zc_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.subscribe(Image, "/zc/segpp/label")
    camera = probe.publisher(CompressedImage, "/zc/image/compressed")
    try:
        def answered():
            msg = rgb_to_compressed(SCENE, Header(stamp=probe.now_msg(), frame_id="zc_png"), "png")
            camera.publish(msg)
            return probe.messages("/zc/segpp/label")
        out = wait_for(answered, START_TIMEOUT, "labels of compressed frames", group, period=0.5)[-1]
        values = diagnostics_status(probe, "/zc/segpp")[2]
        assert values["weights"] == str(weights) and values["device"] == "cpu"
        assert values["input_topic"] == "/zc/image/compressed"
        np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE, 128, weights=weights))
    finally:
        probe.close()
        ended_cleanly(group)
