"""Keypoints through real rclpy and real Fast DDS: the node as its own process, a probe here."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from segpp_ros.inference.vocab import COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON
from segpp_ros.training.data.scenes import render_scene

from .conftest import one_thread
from .rosgraph import (
    NodeProcess,
    answer,
    Probe,
    counter,
    diagnostics_values,
    make_frame,
    refused_start,
    require_isolated_network,
    roundtrip,
    send_until,
    set_params,
    wait_for,
)

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NAME = "segpp_pose"
IMAGE_TOPIC = "/pose_cam/image"
# five person components at max_side 256 with min area 100 (checked below); max_persons caps them at 3
SCENE = render_scene(10_000_910, 240, 320).image
NODE_PARAMS = {"device": "cpu", "max_side": 256, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.5,
               "pose.enable": True, "pose.min_box_area": 100, "pose.max_persons": 3}
START_TIMEOUT = 120.0
K = len(COCO_KEYPOINTS)
# frames whose frame_id starts with segpp-fault: misbehave on purpose (segpp_ros/harness/faults.py)
FAULTS = {"SEGPP_FAULT_INJECTION": "1"}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from segpp.msg import KeypointInfo, PersonKeypointsArray
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    node = NodeProcess(tmp_path_factory.mktemp("pose"), NODE_PARAMS, {"image": IMAGE_TOPIC}, name=NAME, env=FAULTS)
    probe = Probe("segpp_test_pose_probe")
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    probe.subscribe(Image, f"/{NAME}/label")
    probe.subscribe(Image, f"/{NAME}/overlay")
    probe.subscribe(PersonKeypointsArray, f"/{NAME}/keypoints", reliable)
    probe.subscribe(MarkerArray, f"/{NAME}/markers", reliable)
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.subscribe(KeypointInfo, f"/{NAME}/keypoint_info", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    probe.camera = probe.publisher(Image, IMAGE_TOPIC)
    wait_for(lambda: diagnostics_values(probe, f"/{NAME}"), START_TIMEOUT, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    code = node.stop()
    assert code == 0, f"node exited with {code}:\n{node.output()[-3000:]}"


def keypoints_for(graph, msg, timeout: float = 60.0):
    """Publish a frame until its keypoints message arrives; return it."""
    return roundtrip(graph, msg, f"/{NAME}/keypoints", timeout)


def reference_poses(image: np.ndarray, pose_merge: str = "none", merge_gap: float = 0.0,
                    person_ids: tuple[int, ...] = (11, 12), **estimator):
    """What the inference core computes for the same image and settings (one thread, like the
    node); person_ids: the Cityscapes IDs of pose.person_classes (default person, rider)."""
    from segpp_ros.inference import Segmenter
    from segpp_ros.inference.pose import PoseEstimator, person_boxes

    with one_thread():
        labels = Segmenter(None, device="cpu", max_side=NODE_PARAMS["max_side"])(image).labels
        boxes = person_boxes(labels, person_ids, min_area=NODE_PARAMS["pose.min_box_area"], merge_gap=merge_gap)
        return boxes, PoseEstimator(None, device="cpu", merge=pose_merge, **estimator)(
            image, boxes, NODE_PARAMS["pose.max_persons"])


def test_keypoints_match_inference_core(graph):
    _, probe = graph
    frame = make_frame(probe, SCENE)
    out = keypoints_for(graph, frame)
    assert out.header.frame_id == frame.header.frame_id
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (frame.header.stamp.sec, frame.header.stamp.nanosec)
    cap = NODE_PARAMS["pose.max_persons"]
    boxes, expected = reference_poses(SCENE)
    assert len(boxes) > cap and len(expected.persons) == cap           # the premise: the cap applies
    assert_same_persons(out, expected)
    assert [p.instance_id for p in out.persons] == list(range(cap))
    # against the scene's ground truth: every box the node reports lies on one of its persons
    truth = [p.box for p in render_scene(10_000_910, 240, 320).persons]
    for person in out.persons:
        x0, y0, x1, y1 = person.box
        assert any(min(x1, t[2]) > max(x0, t[0]) and min(y1, t[3]) > max(y0, t[1]) for t in truth), person.box


def assert_same_persons(out, expected) -> None:
    """~/keypoints equal to the core's PoseResult: boxes, ids, every joint in model order."""
    assert len(out.persons) == len(expected.persons)
    for got, want in zip(out.persons, expected.persons):
        assert len(got.keypoints) == K
        np.testing.assert_allclose(np.array(got.box), want.box, atol=1e-4)
        assert got.instance_id == want.instance_id
        kp = np.array([[k.x, k.y, k.score] for k in got.keypoints])
        np.testing.assert_allclose(kp, want.keypoints, atol=1e-3)


def test_keypoint_info_is_latched(graph):
    _, probe = graph
    info = wait_for(lambda: probe.messages(f"/{NAME}/keypoint_info"), 30, "~/keypoint_info")[-1]
    assert list(info.names) == list(COCO_KEYPOINTS)
    assert [tuple(info.skeleton[i:i + 2]) for i in range(0, len(info.skeleton), 2)] == list(COCO_SKELETON)
    assert [tuple(info.flip_pairs[i:i + 2]) for i in range(0, len(info.flip_pairs), 2)] == list(COCO_FLIP_PAIRS)


def test_markers_for_rviz(graph):
    from visualization_msgs.msg import Marker

    _, probe = graph
    frame = make_frame(probe, SCENE)
    keypoints_for(graph, frame)
    markers = wait_for(lambda: [m for m in probe.messages(f"/{NAME}/markers")
                                if m.markers and m.markers[0].header.frame_id == frame.header.frame_id],
                       30, "~/markers of the frame")[-1].markers
    assert markers[0].action == Marker.DELETEALL
    _, expected = reference_poses(SCENE)
    assert [m.type for m in markers[1:]] == [Marker.LINE_LIST, Marker.POINTS, Marker.TEXT_VIEW_FACING] * len(
        expected.persons)
    # per person its track id: marker ids 3t, 3t + 1, 3t + 2, the text the id, as on ~/keypoints
    out = answer(probe, f"/{NAME}/keypoints", frame)
    tracks = [p.track_id for p in out.persons]
    assert len(set(tracks)) == len(tracks) and min(tracks) >= 1
    assert [m.id for m in markers[1:]] == [3 * t + k for t in tracks for k in range(3)]
    assert [m.text for m in markers[3::3]] == [str(t) for t in tracks]
    assert all(m.header.frame_id == frame.header.frame_id for m in markers)
    # per person, from the core's keypoints: joints at or above the score threshold, edges whose
    # two ends are, each edge in its limb's colour, in metres (pose.marker_scale per pixel)
    from segpp_ros.inference.drawing import limb_colour

    scale, threshold = 0.001, 0.15                           # the defaults of the node
    for i, person in enumerate(expected.persons):
        lines, joints = markers[1 + 3 * i], markers[2 + 3 * i]
        kp = person.keypoints
        shown = kp[:, 2] >= threshold
        assert 0 < shown.sum() < K or shown.all()
        np.testing.assert_allclose([(p.x, p.y) for p in joints.points], kp[shown, :2] * scale, atol=1e-5)
        edges = [(a, b) for a, b in COCO_SKELETON if shown[a] and shown[b]]
        assert len(lines.points) == 2 * len(edges) == len(lines.colors)
        for k, (a, b) in enumerate(edges):
            np.testing.assert_allclose([(lines.points[2 * k].x, lines.points[2 * k].y),
                                        (lines.points[2 * k + 1].x, lines.points[2 * k + 1].y)],
                                       kp[[a, b], :2] * scale, atol=1e-5)
            colour = lines.colors[2 * k]
            assert np.allclose([colour.r, colour.g, colour.b], np.array(limb_colour(a, b, COCO_KEYPOINTS)) / 255)
        assert lines.scale.x == pytest.approx(3 * scale) and joints.scale.x == pytest.approx(6 * scale)


def test_overlay_draws_the_skeletons_by_parameter(graph):
    from segpp_ros.inference import Segmenter
    from segpp_ros.ros.conversions import image_to_rgb

    _, probe = graph
    with one_thread():
        seg = Segmenter(None, device="cpu", max_side=NODE_PARAMS["max_side"])
        plain = seg.overlay(SCENE, seg(SCENE).labels, 0.5)
    drawn = image_to_rgb(roundtrip(graph, make_frame(probe, SCENE), f"/{NAME}/overlay"))
    assert drawn.shape == plain.shape and (drawn != plain).any(axis=2).sum() > 50   # skeleton pixels
    assert set_params(probe, NAME, **{"pose.draw_overlay": False})[0].successful
    try:
        undrawn = image_to_rgb(roundtrip(graph, make_frame(probe, SCENE), f"/{NAME}/overlay"))
        np.testing.assert_array_equal(undrawn, plain)
    finally:
        assert set_params(probe, NAME, **{"pose.draw_overlay": True})[0].successful


def test_pose_merge_preset_changes_live(graph):
    _, probe = graph
    assert set_params(probe, NAME, **{"pose.merge.preset": "2x2"})[0].successful
    try:
        out = keypoints_for(graph, make_frame(probe, SCENE))
        assert_same_persons(out, reference_poses(SCENE, "2x2")[1])       # the core's 2x2 keypoints
        wait_for(lambda: diagnostics_values(probe, f"/{NAME}")["pose_merge_preset"] == "2x2", 10,
                 "pose_merge_preset 2x2 on /diagnostics")
        # the segmentation model keeps its own setting
        assert diagnostics_values(probe, f"/{NAME}")["merge_preset"] == "none"
        bad = set_params(probe, NAME, **{"pose.merge.preset": "fastest"})[0]
        assert not bad.successful and "pose.merge.preset" in bad.reason
        bad = set_params(probe, NAME, **{"pose.merge.custom": "{stages: [{kv: {mode: bsm, ratio: 1.5}}, {}, {}, {}]}"})[0]
        assert not bad.successful and "pose.merge.custom stages[0].kv.ratio" in bad.reason
        assert diagnostics_values(probe, f"/{NAME}")["pose_merge_preset"] == "2x2"
    finally:
        assert set_params(probe, NAME, **{"pose.merge.preset": "none"})[0].successful


def test_flip_test_and_padding_are_the_cores(graph):
    # set live together: the mirrored crops averaged in, and larger crops around each box
    _, probe = graph
    assert set_params(probe, NAME, **{"pose.flip_test": True, "pose.padding": 1.5})[0].successful
    try:
        out = keypoints_for(graph, make_frame(probe, SCENE))
        expected = reference_poses(SCENE, flip_test=True, padding=1.5)[1]
        assert_same_persons(out, expected)
        plain = reference_poses(SCENE)[1]
        assert np.abs(expected.persons[0].keypoints - plain.persons[0].keypoints).max() > 0.5   # it matters
    finally:
        assert set_params(probe, NAME, **{"pose.flip_test": False, "pose.padding": 1.25})[0].successful


def test_merge_gap_joins_person_components_as_in_the_core(graph):
    _, probe = graph
    assert set_params(probe, NAME, **{"pose.merge_gap": 40.0})[0].successful
    try:
        boxes, expected = reference_poses(SCENE, merge_gap=40.0)
        assert len(boxes) < len(reference_poses(SCENE)[0])             # the gap joins some components
        assert_same_persons(keypoints_for(graph, make_frame(probe, SCENE)), expected)
    finally:
        assert set_params(probe, NAME, **{"pose.merge_gap": 0.0})[0].successful


def test_whole_frame_box_source(graph):
    _, probe = graph
    assert set_params(probe, NAME, **{"pose.box_source": "whole_frame"})[0].successful
    try:
        out = keypoints_for(graph, make_frame(probe, SCENE))
        assert len(out.persons) == 1
        person = out.persons[0]
        assert list(person.box) == [0, 0, SCENE.shape[1] - 1, SCENE.shape[0] - 1] and person.instance_id == -1
        assert len(person.keypoints) == K
    finally:
        assert set_params(probe, NAME, **{"pose.box_source": "segmentation"})[0].successful


def test_pose_disabled_publishes_no_keypoints(graph):
    _, probe = graph
    assert set_params(probe, NAME, **{"pose.enable": False})[0].successful
    try:
        frames = [make_frame(probe, SCENE) for _ in range(3)]
        for frame in frames:
            roundtrip(graph, frame, f"/{NAME}/label")                  # segmentation still answers
        wait_for(lambda: diagnostics_values(probe, f"/{NAME}")["pose"] == "off", 10, "pose off on /diagnostics")
    finally:
        assert set_params(probe, NAME, **{"pose.enable": True})[0].successful
    # the positive signal: a later frame's keypoints. The pose stage takes frames in order and
    # publishes reliably in order, so a keypoints message of the three would have come first
    assert_same_persons(keypoints_for(graph, make_frame(probe, SCENE)), reference_poses(SCENE)[1])
    ids = {f.header.frame_id for f in frames}
    assert not [m for m in probe.messages(f"/{NAME}/keypoints") if m.header.frame_id in ids]


def test_bad_pose_weights_stop_the_node_with_the_file_named(tmp_path):
    require_isolated_network()
    bad = tmp_path / "pose.safetensors"
    bad.write_bytes(b"\x00" * 64)
    log = refused_start(tmp_path, {**NODE_PARAMS, "pose.weights": str(bad), "warmup_frames": 0}, "segpp_badpose")
    assert str(bad) in log and "pose.weights" in log, log[-2000:]


@contextlib.contextmanager
def own_node(tmp_path, name: str, leaves: tuple[str, ...] = ("label", "overlay"), **params):
    """A node of its own (NODE_PARAMS with ``params``) and a probe subscribed to its keypoints,
    keypoint_info, diagnostics and the image outputs ``leaves``, camera on /<name>_cam/image."""
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from segpp.msg import KeypointInfo, PersonKeypointsArray
    from sensor_msgs.msg import Image

    node = NodeProcess(tmp_path, {**NODE_PARAMS, **params}, {"image": f"/{name}_cam/image"}, name=name)
    probe = Probe(f"{name}_probe")
    try:
        probe.subscribe(PersonKeypointsArray, f"/{name}/keypoints", QoSProfile(depth=10,
                                                                              reliability=ReliabilityPolicy.RELIABLE))
        probe.subscribe(KeypointInfo, f"/{name}/keypoint_info", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        for leaf in leaves:
            probe.subscribe(Image, f"/{name}/{leaf}")
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.camera = probe.publisher(Image, f"/{name}_cam/image")
        yield node, probe
    finally:
        probe.close()
        assert node.stop() == 0


def test_keypoints_inline_on_the_segmentation_thread(tmp_path):
    """pose.own_thread false: the same outputs, computed before the next frame is taken."""
    name = "segpp_pose_inline"
    with own_node(tmp_path, name, **{"pose.own_thread": False}) as graph:
        out = roundtrip(graph, make_frame(graph[1], SCENE), f"/{name}/keypoints", START_TIMEOUT)
        assert_same_persons(out, reference_poses(SCENE)[1])                # what the own thread gives
        overlay = roundtrip(graph, make_frame(graph[1], SCENE), f"/{name}/overlay")
        assert overlay.encoding == "rgb8" and (overlay.height, overlay.width) == SCENE.shape[:2]


def test_the_pose_model_loads_on_first_use(tmp_path):
    """Started with pose.enable false, the node has no pose model; switched on live, it loads it
    (logged, ~/keypoint_info published then) and answers with the core's keypoints."""
    name = "segpp_pose_later"
    with own_node(tmp_path, name, **{"pose.enable": False}) as (node, probe):
        roundtrip((node, probe), make_frame(probe, SCENE), f"/{name}/label", START_TIMEOUT)
        assert "pose: SegFormer++" not in node.output() and not probe.messages(f"/{name}/keypoint_info")
        assert set_params(probe, name, **{"pose.enable": True})[0].successful
        out = roundtrip((node, probe), make_frame(probe, SCENE), f"/{name}/keypoints", START_TIMEOUT)
        assert_same_persons(out, reference_poses(SCENE)[1])
        assert "pose: SegFormer++" in node.output()
        info = wait_for(lambda: probe.messages(f"/{name}/keypoint_info"), 30, "~/keypoint_info after the load")
        assert list(info[-1].names) == list(COCO_KEYPOINTS)


def test_a_failing_pose_stage_is_counted_and_the_labels_still_go_out(graph):
    """A frame the pose stage fails on (segpp-fault:pose): pose_errors counts it and the log names
    it; its labels are published all the same, and the next frame gets the core's keypoints."""
    node, probe = graph
    frame = make_frame(probe, SCENE)
    frame.header.frame_id = "segpp-fault:pose"
    send_until(graph, frame, lambda: counter(probe, "pose_errors", f"/{NAME}") > 0, "the pose_errors counter")
    wait_for(lambda: [m for m in probe.messages(f"/{NAME}/label") if m.header.frame_id == frame.header.frame_id],
             30, "the failed frame's labels", node)
    assert_same_persons(keypoints_for(graph, make_frame(probe, SCENE)), reference_poses(SCENE)[1])
    assert "keypoints failed: InjectedFault" in node.output()
    assert not [m for m in probe.messages(f"/{NAME}/keypoints") if m.header.frame_id == frame.header.frame_id]


def test_person_classes_choose_the_boxes_as_in_the_core(tmp_path):
    """pose.person_classes "car": the keypoints of the car components, as the core finds them (a
    node that kept person,rider would report other boxes)."""
    name = "segpp_pose_cars"
    cars, persons = reference_poses(SCENE, person_ids=(13,)), reference_poses(SCENE)
    assert 0 < len(cars[0]) and cars[0] != persons[0]                    # the premise: other boxes
    with own_node(tmp_path, name, **{"pose.person_classes": "car"}) as graph:
        out = roundtrip(graph, make_frame(graph[1], SCENE), f"/{name}/keypoints", START_TIMEOUT)
        assert_same_persons(out, cars[1])


def test_colour_overlay_and_markers_are_made_only_while_subscribed(tmp_path):
    """The node counts the frames whose ~/color, ~/overlay and ~/markers it made: none while
    nobody subscribes, every frame once someone does, none again after they leave."""
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    name = "segpp_pose_optional"
    leaves = ("color", "overlay", "markers")
    with own_node(tmp_path, name, leaves=("label",)) as graph:
        node, probe = graph

        def rendered() -> dict[str, int]:
            return {leaf: counter(probe, f"rendered_{leaf}", f"/{name}") for leaf in leaves}

        def frames_out() -> int:
            return int((diagnostics_values(probe, f"/{name}") or {}).get("frames_out", 0))

        roundtrip(graph, make_frame(probe, SCENE), f"/{name}/keypoints", START_TIMEOUT)
        send_until(graph, make_frame(probe, SCENE), lambda: frames_out() >= 5, "five frames out")
        assert rendered() == dict.fromkeys(leaves, 0)
        for leaf in ("color", "overlay"):
            probe.subscribe(Image, f"/{name}/{leaf}")
        probe.subscribe(MarkerArray, f"/{name}/markers")
        send_until(graph, make_frame(probe, SCENE), lambda: all(probe.messages(f"/{name}/{leaf}") for leaf in leaves),
                   "a message on each of the three")
        send_until(graph, make_frame(probe, SCENE), lambda: min(rendered().values()) > 0, "the counters")
        for leaf in leaves:
            probe.unsubscribe(f"/{name}/{leaf}")
        # the node learns of the leaving subscribers through discovery: wait until five frames go
        # out with none of the three made, within one diagnostics snapshot each
        still = {"since": None}

        def stopped() -> bool:
            values = diagnostics_values(probe, f"/{name}") or {}
            now = (int(values.get("frames_out", 0)), *(int(values.get(f"rendered_{leaf}", 0)) for leaf in leaves))
            if still["since"] is None or now[1:] != still["since"][1:]:
                still["since"] = now
            return now[0] - still["since"][0] >= 5
        send_until(graph, make_frame(probe, SCENE), stopped, "five frames without colour, overlay or markers")
