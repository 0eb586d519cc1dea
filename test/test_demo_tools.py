"""The ROS demo's tools without the node: bundled samples, camera / sink / demo arguments,
label decoding, and one real camera -> sink run over DDS (run via tools/netns-run or make test)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segpp_ros.ros.env import is_isolated_network
from segpp_ros.samples import sample_frames
from segpp_ros.training import samples as make_samples

REPO = Path(__file__).resolve().parent.parent


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{path} is not readable"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# -- bundled samples ---------------------------------------------------------------------------
def test_samples_are_bundled_small_and_full_size() -> None:
    frames = sample_frames()
    assert [p.name for p in frames] == [f"frame_{i:03d}.jpg" for i in range(make_samples.COUNT)]
    assert sum(p.stat().st_size for p in frames) < 1.5e6
    assert _read_rgb(frames[0]).shape == (make_samples.HEIGHT, make_samples.WIDTH, 3)


def test_samples_are_the_generators_held_out_scenes(tmp_path) -> None:
    # the bundled JPEG is the rendered scene up to JPEG error...
    rendered = make_samples.render_frame(1).astype(np.int16)
    assert np.abs(_read_rgb(sample_frames()[1]).astype(np.int16) - rendered).mean() < 3
    # ...and regenerating is deterministic, byte for byte
    first = make_samples.write_samples(tmp_path / "a", count=1)[0].read_bytes()
    assert make_samples.write_samples(tmp_path / "b", count=1)[0].read_bytes() == first


def test_sample_seeds_are_held_out() -> None:
    from segpp_ros.training.train import HELD_OUT_SEED_BASE

    assert make_samples.sample_seed(0) == HELD_OUT_SEED_BASE + 100


# -- arguments ---------------------------------------------------------------------------------
def test_camera_arguments() -> None:
    from segpp_ros.cli import camera

    args, ros_argv = camera.parse_args(["--rate", "20", "--size", "240x320", "--ros-args", "-r", "image:=/x"])
    assert (args.rate, args.size, args.topic, args.frames, args.encoding) == (20.0, (240, 320), "image", 0, "rgb8")
    assert not args.compressed and not args.reliable and args.frame_id == "camera"
    assert ros_argv[0] == "segpp-camera" and ros_argv[-3:] == ["--ros-args", "-r", "image:=/x"]
    for bad in (["--rate", "0"], ["--size", "big"], ["--frames", "-1"], ["--encoding", "yuv422"]):
        with pytest.raises(SystemExit):
            camera.parse_args(bad)


def test_camera_preencodes_with_own_headers() -> None:
    from segpp_ros.cli import camera
    from segpp_ros.harness.camera import CameraSettings, encode_messages

    args, _ = camera.parse_args(["--encoding", "bgr8", "--size", "64x128"])
    images = camera.load_images([str(p) for p in sample_frames()[:2]], args.size)
    messages = encode_messages(images, CameraSettings(encoding=args.encoding))
    assert [(m.height, m.width, m.encoding, m.header.frame_id) for m in messages] == [(64, 128, "bgr8", "camera")] * 2
    assert messages[0].header is not messages[1].header  # stamping one must not stamp the other


def test_sink_arguments() -> None:
    from segpp_ros.cli import sink

    args, _ = sink.parse_args(["--prefix", "robot/segpp/", "--frames", "3"])
    assert (args.prefix, args.frames, args.save_every, args.out, args.timeout) == ("/robot/segpp", 3, 1, "out/demo", None)


def test_demo_commands(tmp_path) -> None:
    from segpp_ros.cli import demo

    args = demo.build_parser().parse_args(["--weights", "w.safetensors", "--device", "cpu", "--merge", "fast"])
    assert (args.frames, args.rate, args.max_side, args.timeout, args.out) == (24, 5.0, 512, 300.0, "out/demo")
    node = demo.node_command(args, Path("config/segpp.yaml"), None)          # no ros2 command
    assert node[1:3] == ["-m", "segpp_ros.cli.node"]
    for pair in (["--params-file", "config/segpp.yaml"], ["-p", "max_side:=512"], ["-p", "merge.preset:=fast"],
                 ["-p", "weights:=w.safetensors"], ["-p", "device:=cpu"], ["-r", "image:=/camera/image"]):
        assert any(node[i:i + 2] == pair for i in range(len(node))), pair
    args.out = str(tmp_path)
    launched = demo.node_command(args, Path("config/segpp.yaml"), Path("/venv/bin/ros2"))
    assert launched[:4] == ["/venv/bin/ros2", "launch", "segpp", "segpp.launch.py"]
    assert {"image:=/camera/image", f"params_file:={tmp_path / 'demo_params.yaml'}", "weights:=w.safetensors",
            "device:=cpu"} <= set(launched[4:])
    import yaml

    written = yaml.safe_load((tmp_path / "demo_params.yaml").read_text())["/**"]["ros__parameters"]
    assert written == {"max_side": 512, "merge.preset": "fast"}
    cam = demo.camera_command(args)
    assert cam[1:3] == ["-m", "segpp_ros.cli.camera"] and cam[3:] == ["--topic", "/camera/image", "--rate", "5",
                                                                      "--frames", "0"]
    assert demo.sink_command(args)[1:] == ["-m", "segpp_ros.cli.sink", "--frames", "24", "--out", str(tmp_path)]


def test_demo_refuses_a_shared_network(monkeypatch, capsys) -> None:
    from segpp_ros.cli import demo

    monkeypatch.setattr(demo, "is_isolated_network", lambda: False)
    assert demo.main([]) == 2
    assert "tools/netns-run" in capsys.readouterr().err


def test_offline_parser() -> None:
    from segpp_ros.cli.offline import build_parser

    assert build_parser().prog == "segpp-offline"


# -- sink pieces -------------------------------------------------------------------------------
def _label_msg(ids: np.ndarray, encoding: str, pad: int):
    from sensor_msgs.msg import Image

    h, w = ids.shape
    row = ids.astype(ids.dtype.newbyteorder("<")).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([row, np.full((h, pad), 7, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=row.shape[1] + pad, is_bigendian=0)
    msg.data.frombytes(rows.tobytes())
    return msg


@pytest.mark.parametrize("encoding,dtype", [("mono8", np.uint8), ("mono16", np.uint16)])
def test_sink_decodes_padded_labels(encoding, dtype) -> None:
    from segpp_ros.harness.sink import decode_label

    ids = (np.arange(5 * 6).reshape(5, 6) * 11).astype(dtype)
    out = decode_label(_label_msg(ids, encoding, pad=3))
    assert out.dtype == dtype and np.array_equal(out, ids)


def test_sink_writes_classes_txt(tmp_path) -> None:
    from segpp.msg import LabelPalette
    from vision_msgs.msg import LabelInfo, VisionClass

    from segpp_ros.harness.sink import Recorder, SinkSettings

    recorder = Recorder(SinkSettings(out=str(tmp_path)))
    recorder.on_label_info(LabelInfo(class_map=[VisionClass(class_id=1, class_name="sky"),
                                                VisionClass(class_id=0, class_name="road")]))
    assert (tmp_path / "classes.txt").read_text() == "0 road 0 0 0\n1 sky 0 0 0\n"     # colours still to come
    recorder.on_palette(LabelPalette(colors=[128, 64, 128, 70, 130, 180]))
    recorder.close()
    assert (tmp_path / "classes.txt").read_text() == "0 road 128 64 128\n1 sky 70 130 180\n"


# -- camera -> sink over DDS -------------------------------------------------------------------
def _start(module: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> str:
    """SIGINT, then kill; the process's output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.mark.ros_node
def test_camera_to_sink_over_dds(tmp_path) -> None:
    if not is_isolated_network():
        pytest.fail("this test starts DDS: run ROS tests via tools/netns-run or make test")
    out = tmp_path / "sink"
    # the camera stands in for the node's ~/color output: rgb8 on /segpp/color
    sink = _start("segpp_ros.cli.sink", "--frames", "3", "--out", str(out), "--timeout", "60")
    camera = _start("segpp_ros.cli.camera", "--topic", "/segpp/color", "--rate", "20", "--frames", "0")
    try:
        sink_out, _ = sink.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        sink_out = _stop(sink)
    camera_out = _stop(camera)
    assert sink.returncode == 0, f"sink failed:\n{sink_out}\ncamera:\n{camera_out}"
    assert camera.returncode == 0, camera_out
    assert "segpp-camera: published" in camera_out
    assert sorted(p.name for p in out.glob("*.png")) == ["000_color.png", "001_color.png", "002_color.png"]
    samples = [_read_rgb(p) for p in sample_frames()]
    for png in out.glob("*.png"):
        # rgb8 over DDS and a PNG are lossless: each saved image is exactly one sample frame
        # (colour order included); which ones depends on when discovery completed
        saved = _read_rgb(png)
        assert any(np.array_equal(saved, s) for s in samples), f"{png.name} matches no sample frame"
    table = sink_out[sink_out.index("=== segpp-sink summary ==="):]
    color_row = next(line for line in table.splitlines() if line.startswith("/segpp/color"))
    assert color_row.split()[1] == "3"
    assert float(color_row.split()[3]) < 1000  # p50 latency in ms, camera stamp to sink
