"""The node through real rclpy and real Fast DDS, as separate processes.

One node process (started like the launch file starts it) serves most tests of this module;
a probe node in the test process publishes camera images and collects the outputs.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import (  # noqa: F401
    NodeProcess,
    Probe,
    answer,
    diagnostics_values,
    get_param,
    labels_of,
    make_frame,
    refused_start,
    require_isolated_network,
    roundtrip,
    set_params,
    wait_for,
)
from .rosgraph import reference_labels as labels_for

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

IMAGE_TOPIC = "/test_cam/image"
H, W = 120, 200
# small network input and one thread: fast, and bit-identical to the in-process reference
NODE_PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.5,
               "pose.enable": False}
START_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from segpp.msg import LabelPalette
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    node = NodeProcess(tmp_path_factory.mktemp("node"), NODE_PARAMS, {"image": IMAGE_TOPIC})
    probe = Probe("segpp_test_probe")
    for topic in ("/segpp/label", "/segpp/color", "/segpp/overlay"):
        probe.subscribe(Image, topic)
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.subscribe(LabelInfo, "/segpp/label_info", latched)
    probe.subscribe(LabelPalette, "/segpp/palette", latched)
    probe.camera = probe.publisher(Image, IMAGE_TOPIC)
    wait_for(lambda: diagnostics_values(probe), START_TIMEOUT, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    code = node.stop()
    assert code == 0, f"node exited with {code}:\n{node.output()[-3000:]}"


def reference_labels(image: np.ndarray, merge="none") -> np.ndarray:
    return labels_for(image, NODE_PARAMS["max_side"], merge)


SCENE = render_scene(10_000_777, H, W).image


def test_label_image_matches_inference_core(graph):
    node, probe = graph
    msg = make_frame(probe, SCENE)
    out = roundtrip(graph, msg)
    assert (out.height, out.width, out.encoding) == (H, W, "mono8")
    assert out.header == msg.header  # stamp and frame_id verbatim
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))


def test_colour_overlay_label_info_and_palette(graph):
    node, probe = graph
    msg = make_frame(probe, SCENE)
    color = roundtrip(graph, msg, "/segpp/color")
    overlay = wait_for(lambda: answer(probe, "/segpp/overlay", msg), 30, "the overlay", node)
    info = wait_for(lambda: probe.messages("/segpp/label_info"), 30, "latched label_info", node)[-1]
    colors = wait_for(lambda: probe.messages("/segpp/palette"), 30, "latched palette", node)[-1]
    assert (color.encoding, overlay.encoding) == ("rgb8", "rgb8")
    assert (color.height, color.width, overlay.height, overlay.width) == (H, W, H, W)
    from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    # vision_msgs/LabelInfo: class id -> name
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(CITYSCAPES_CLASSES))
    assert "MiT-B0" in colors.model and colors.weights.endswith(".safetensors")
    palette = np.array(colors.colors, np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, np.array(CITYSCAPES_PALETTE, np.uint8))
    labels = reference_labels(SCENE)
    rgb = np.frombuffer(bytes(color.data), np.uint8).reshape(H, W, 3)
    np.testing.assert_array_equal(rgb, palette[labels])


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8"])
def test_colour_encodings_give_the_same_labels(graph, encoding):
    node, probe = graph
    out = roundtrip(graph, make_frame(probe, SCENE, encoding))
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))


def test_padded_rows_and_mono_inputs(graph):
    node, probe = graph
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image

    padded = rgb_to_image(SCENE, Header(stamp=probe.now_msg(), frame_id="padded"), "rgb8", pad=7)
    assert padded.step == W * 3 + 7
    np.testing.assert_array_equal(labels_of(roundtrip(graph, padded)), reference_labels(SCENE))
    # grey messages built here from their definition, not by our converter: mono16 holds the
    # grey level in its high byte and noise in the low one, which the node must ignore
    gray8 = SCENE[..., 1].copy()
    noise = np.random.default_rng(5).integers(0, 256, gray8.shape, dtype=np.uint16)
    mono16 = ((gray8.astype(np.uint16) << 8) | noise).astype("<u2")
    expected = reference_labels(np.repeat(gray8[..., None], 3, axis=2))
    assert not (expected == reference_labels(np.repeat(noise.astype(np.uint8)[..., None], 3, axis=2))).all()
    for encoding, data, step in (("mono8", gray8.tobytes(), W), ("mono16", mono16.tobytes(), 2 * W)):
        msg = make_frame(probe, SCENE, encoding=encoding, data=data, step=step, is_bigendian=0)
        np.testing.assert_array_equal(labels_of(roundtrip(graph, msg)), expected)


def test_camera_encodings_through_the_node(graph):
    # a Bayer mosaic, 16-bit colour and OpenCV's 8UC3 as drivers send them: the node's labels
    # are the core's for the pixels the message holds
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import image_to_rgb

    node, probe = graph
    mosaic = np.empty((H, W), np.uint8)
    for k, c in enumerate((0, 1, 1, 2)):                 # r g / g b
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = SCENE[dy::2, dx::2, c]
    payloads = {"bayer_rggb8": mosaic, "rgb16": (SCENE.astype(np.uint16) * 257).astype("<u2"),
                "8UC3": np.ascontiguousarray(SCENE[..., ::-1])}
    for encoding, pixels in payloads.items():
        msg = Image(header=Header(stamp=probe.now_msg(), frame_id=encoding), height=H, width=W, encoding=encoding,
                    is_bigendian=0, step=W * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1))
        msg.data.frombytes(pixels.tobytes())
        expected = reference_labels(np.ascontiguousarray(image_to_rgb(msg)))
        np.testing.assert_array_equal(labels_of(roundtrip(graph, msg)), expected, err_msg=encoding)


def test_merge_preset_switches_live_and_invalid_values_are_rejected(graph):
    node, probe = graph
    results = set_params(probe, merge__preset="downsample")
    assert results[0].successful, results[0].reason
    out = roundtrip(graph, make_frame(probe, SCENE))
    expected = reference_labels(SCENE, "downsample")
    assert not np.array_equal(expected, reference_labels(SCENE)), "test image must tell the presets apart"
    np.testing.assert_array_equal(labels_of(out), expected)
    wait_for(lambda: diagnostics_values(probe).get("merge_preset") == "downsample", 10, "diagnostics preset")

    # a custom configuration (one string, as `ros2 param set` sends it) equal to 'hq' in stages 1-2
    # gives those labels
    results = set_params(probe, merge__preset="custom", merge__custom="{stages: [{kv: {mode: bsm, ratio: 0.6, "
                         "cell: [2, 2]}}, {kv: {mode: bsm, ratio: 0.6, cell: [2, 2]}}, {}, {}]}")
    assert all(r.successful for r in results), [r.reason for r in results]
    from segpp_ros.model.merge import PRESETS, MergeConfig
    hq_first_two = MergeConfig("custom", (*PRESETS["hq"].stages[:2], *PRESETS["none"].stages[2:]))
    out = roundtrip(graph, make_frame(probe, SCENE))
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE, hq_first_two))

    for name, value, words in [("merge__preset", "turbo", "one of"),
                               ("merge__custom", "{stages: [{q: {cell: [0, 2]}}, {}, {}, {}]}", "stages[0].q.cell"),
                               ("merge__custom", "{stages: [{}, {q: {mode: magic}}, {}, {}]}", "stages[1].q.mode"),
                               ("merge__custom", "{stages: [", "is not YAML or JSON"),
                               ("weights", "/tmp/x.pth", "read-only"),
                               ("max_side", "big", "")]:
        result = set_params(probe, **{name: value})[0]
        assert not result.successful, f"{name}={value!r} was accepted"
        assert words in result.reason, result.reason
    assert get_param(probe, "merge.preset").string_value == "custom"
    out = roundtrip(graph, make_frame(probe, SCENE))                 # the refused values changed nothing
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE, hq_first_two))
    assert set_params(probe, merge__preset="none")[0].successful
    out = roundtrip(graph, make_frame(probe, SCENE))
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))


def test_bad_inputs_are_counted_and_the_node_keeps_going(graph):
    node, probe = graph
    good = make_frame(probe, SCENE)
    roundtrip(graph, good)
    bad = [  # built when sent: a stamp older than max_frame_age would be dropped as stale instead
        ("bad_input_encoding", dict(encoding="nv12")),
        ("bad_input_step", dict(step=W)),
        ("bad_input_size", dict(data=bytes(100))),
        ("bad_input_empty", dict(height=0, width=0, step=0, data=b"")),
    ]
    for key, fields in bad:
        sent = []

        def send(fields=fields) -> None:   # best effort may drop one: sent again until counted
            sent.append(make_frame(probe, SCENE, **fields))
            probe.camera.publish(sent[-1])
        send()
        wait_for(lambda: int(diagnostics_values(probe).get(key, 0)) > 0, 30, f"diagnostics counter {key}", node,
                 every=send)
        # the counter is the positive signal; then a good frame is answered, and by then none of
        # the bad ones was (they are refused before inference, in order)
        out = roundtrip(graph, make_frame(probe, SCENE))
        assert all(answer(probe, "/segpp/label", msg) is None for msg in sent)
        assert node.alive()
        np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))
    log = node.output()
    for words in ("nv12", "step", "truncated", "empty"):
        assert words in log, f"no log line about {words!r}"


def test_stale_frames_are_dropped_and_counted_when_max_frame_age_is_set(graph):
    node, probe = graph
    assert set_params(probe, max_frame_age=1.0)[0].successful        # opt-in: off by default
    try:
        msg = make_frame(probe, SCENE)
        msg.header.stamp.sec -= 30  # older than max_frame_age (1 s)
        probe.camera.publish(msg)
        wait_for(lambda: int(diagnostics_values(probe).get("dropped_stale", 0)) > 0, 30, "dropped_stale count", node,
                 every=lambda: probe.camera.publish(msg))
        roundtrip(graph, make_frame(probe, SCENE))           # a fresh frame is answered; the stale one never was
        assert answer(probe, "/segpp/label", msg) is None
    finally:
        assert set_params(probe, max_frame_age=0.0)[0].successful


def test_publishing_faster_than_inference_never_grows_latency(graph):
    """Frames at ~25 Hz into a node doing a few Hz: a queue would grow latency by seconds."""
    node, probe = graph
    assert set_params(probe, max_side=640)[0].successful  # slow the network down
    try:
        big = render_scene(10_000_778, 480, 640).image
        sent: list[str] = []
        start = time.monotonic()
        # mono8 at 25 Hz: the 6 s burst (150 x 0.3 MB) fits the writer's 64 MB shared-memory
        # segment (config/fastdds_shm.xml). Jazzy's Fast DDS 2.14 stopped delivering to the node
        # for good after 240 rgb8 frames (220 MB) in CI, resends included; Kilted's never did
        while time.monotonic() - start < 6.0:
            msg = make_frame(probe, big, as_encoding="mono8")
            sent.append(msg.header.frame_id)
            probe.camera.publish(msg)
            time.sleep(0.04)
        last = set(sent[-25:])

        def resend() -> None:
            # best effort over a loaded host can lose every fragmented 640x480 frame of the last
            # second (seen in CI on Jazzy): one more fresh frame a second until one is answered.
            # A backlog would still answer the burst's middle frames first, late: the ages below
            msg = make_frame(probe, big, as_encoding="mono8")
            sent.append(msg.header.frame_id)
            last.add(msg.header.frame_id)
            probe.camera.publish(msg)

        # positive signal: one of the last frames sent (the last second) is answered; a backlog
        # would answer frames from the middle first, for seconds
        wait_for(lambda: any(m.header.frame_id in last for m in probe.messages("/segpp/label")), 60,
                 "an answer to one of the last frames", node, every=resend, period=1.0)
        ours = set(sent)
        answered = [(t, m) for t, m in probe.timed_messages("/segpp/label") if m.header.frame_id in ours]
        assert len(answered) >= 3, "the node answered too few frames to judge"
        assert len(answered) < len(sent) / 2, "the node kept up: the test did not overload it"
        # answers come in the order the frames were sent (no frame overtaken by an older one)
        order = [sent.index(m.header.frame_id) for _, m in answered]
        assert order == sorted(order)
        # age at arrival = wall clock at the probe minus the camera stamp (one host, one clock):
        # what the node itself takes per frame plus transport, never a growing backlog. The
        # bound follows the node's own measured latency, so a slow machine does not fail it
        ages = [t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9) for t, m in answered]
        values = wait_for(lambda: diagnostics_values(probe), 10, "diagnostics")
        per_frame = float(values["latency_p95_ms"]) / 1000
        assert max(ages) < 2 * per_frame + 0.5, f"answers aged up to {max(ages):.2f} s ({per_frame:.2f} s per frame)"
        assert int(values["dropped_overwritten"]) > 0
    finally:
        assert set_params(probe, max_side=NODE_PARAMS["max_side"])[0].successful


def test_bad_weights_stop_the_node_with_a_clear_error(tmp_path):
    require_isolated_network()
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    log = refused_start(tmp_path, {"weights": str(bad), "warmup_frames": 0}, "segpp_bad")
    assert str(bad) in log and "weights" in log, log[-2000:]


# (a value of the wrong type is refused the same way when it comes from -p or a single params
# file; rcl keeps the earlier file's value when stacked params files disagree on the type)
@pytest.mark.parametrize("override,words", [({"max_side": 99999}, ["max_side", "range"]),
                                            ({"merge.preset": "turbo"}, ["merge.preset", "fast"])])
def test_bad_parameter_overrides_stop_the_node_with_a_reason(tmp_path, override, words):
    require_isolated_network()
    log = refused_start(tmp_path, {**NODE_PARAMS, **override, "warmup_frames": 0}, "segpp_badparam")
    assert all(w in log for w in words), log[-2000:]


def test_help_prints_usage_without_starting_ros():
    import subprocess

    from segpp_ros.harness.graph import node_executable

    out = subprocess.run([str(node_executable()), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: segpp_node") and "config/segpp.yaml" in out.stdout


def test_compressed_transport(tmp_path):
    """transport:=compressed subscribes <image>/compressed (image_transport's naming)."""
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_compressed

    # its own node name: the module's /segpp node is alive too, on the same /diagnostics
    node = NodeProcess(tmp_path, {**NODE_PARAMS, "transport": "compressed"}, {"image": "/zcam/image"},
                       name="segpp_zc")
    probe = Probe("segpp_test_compressed")
    try:
        probe.subscribe(Image, "/segpp_zc/label")
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.camera = probe.publisher(CompressedImage, "/zcam/image/compressed")
        wait_for(lambda: diagnostics_values(probe, "/segpp_zc"), START_TIMEOUT, "the node's first diagnostics", node)

        def frame(name: str) -> CompressedImage:
            return rgb_to_compressed(SCENE, Header(stamp=probe.now_msg(), frame_id=name), "png")
        graph = (node, probe)
        out = roundtrip(graph, frame("png_1"), "/segpp_zc/label")
        assert out.header.frame_id.startswith("png_1#")
        np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))  # png is lossless
        def send_corrupt() -> None:      # best effort may drop one: sent again until counted
            corrupt = frame("corrupt")
            corrupt.data = bytes(corrupt.data[:200])
            probe.camera.publish(corrupt)
        send_corrupt()
        wait_for(lambda: int(diagnostics_values(probe, "/segpp_zc").get("bad_input_compressed", 0)) > 0, 30,
                 "the bad_input_compressed counter", node, every=send_corrupt)
        assert roundtrip(graph, frame("png_2"), "/segpp_zc/label").header.frame_id.startswith("png_2#")
        assert "/zcam/image/compressed" in node.output()
    finally:
        probe.close()
        assert node.stop() == 0


def test_network_resolution_output(graph):
    node, probe = graph
    from segpp_ros.inference import network_size

    assert set_params(probe, output_resolution="network")[0].successful
    try:
        out = roundtrip(graph, make_frame(probe, SCENE))
        assert (out.height, out.width) == network_size(H, W, NODE_PARAMS["max_side"])
    finally:
        assert set_params(probe, output_resolution="input")[0].successful


def test_more_than_255_classes_give_mono16_labels(tmp_path):
    """A checkpoint of ours with 300 classes, given by the weights parameter."""
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from segpp_ros.model import build_model, save_model

    from .conftest import TINY

    weights = tmp_path / "tiny300.safetensors"
    model = build_model(TINY, num_classes=300).eval()
    save_model(model, weights)
    node = NodeProcess(tmp_path, {**NODE_PARAMS, "weights": str(weights)}, {"image": "/mcam/image"},
                       name="segpp_m16")
    probe = Probe("segpp_test_mono16")
    try:
        probe.subscribe(Image, "/segpp_m16/label")
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.camera = probe.publisher(Image, "/mcam/image")
        wait_for(lambda: diagnostics_values(probe, "/segpp_m16"), START_TIMEOUT, "the node's first diagnostics",
                 node)
        out = roundtrip((node, probe), make_frame(probe, SCENE), "/segpp_m16/label")
        assert (out.encoding, out.height, out.width, out.step) == ("mono16", H, W, 2 * W)
        expected = labels_for(SCENE, NODE_PARAMS["max_side"], weights=weights)
        assert expected.dtype == np.uint16
        np.testing.assert_array_equal(labels_of(out), expected)
        assert diagnostics_values(probe, "/segpp_m16")["weights"] == str(weights)
    finally:
        probe.close()
        assert node.stop() == 0
