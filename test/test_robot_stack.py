"""The node inside a robot stack written the usual way, each scene through real rclpy and Fast DDS:
cameras and consumers with default QoS (reliable, depth 10) and sensor-data QoS (best effort) in
every pairing; a replay with hour-old stamps and a camera whose clock runs ahead (labels flow,
/diagnostics warns); sim time with a /clock publisher; camera_info paired by stamp and scaled at
both output resolutions; persons with track ids over a scripted walk, from a detector's boxes;
touching persons one skeleton each with detector boxes, one merged component without."""
from __future__ import annotations

import re

import threading
import time

import numpy as np
import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import (
    NodeProcess,
    Probe,
    diagnostics_status,
    diagnostics_values,
    labels_of,
    reference_labels,
    require_isolated_network,
    set_params,
    wait_for,
)

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NAME = "segpp_stack"
TOPIC = "/stack_cam/image"
INFO_TOPIC = "/stack_cam/camera_info"             # the image topic's sibling: nothing remapped
PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.3,
          "pose.enable": False}
H, W = 96, 128
SCENE = render_scene(10_000_821, H, W).image
_sent = [0]


def stamped(probe: Probe, image: np.ndarray, offset_s: float = 0.0, stamp=None):
    """An Image with a unique frame_id, stamped now (+ offset_s) or with ``stamp``."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image

    _sent[0] += 1
    if stamp is None:
        ns = probe.node.get_clock().now().nanoseconds + int(offset_s * 1e9)
        stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
    return rgb_to_image(image, Header(stamp=stamp, frame_id=f"stack_{_sent[0]}"))


def delivered(probe: Probe, send, topic: str, frame_id: str, node: NodeProcess, timeout: float = 30.0,
              resend_s: float = 2.0):
    """send() until the output on ``topic`` with ``frame_id`` arrives; (message, sends it took)."""
    sends = [0]

    def again() -> None:
        sends[0] += 1
        send()
    again()
    last = [time.monotonic()]

    def resend() -> None:
        if time.monotonic() - last[0] > resend_s:
            last[0] = time.monotonic()
            again()

    def found():
        return next((m for m in probe.messages(topic) if m.header.frame_id == frame_id), None)
    return wait_for(found, timeout, f"{frame_id} on {topic}", node, every=resend, period=0.05), sends[0]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile

    from sensor_msgs.msg import CameraInfo

    node = NodeProcess(tmp_path_factory.mktemp("stack"), PARAMS, {"image": TOPIC}, name=NAME)
    probe = Probe(f"{NAME}_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.subscribe(CameraInfo, f"/{NAME}/camera_info", 10)
    wait_for(lambda: diagnostics_values(probe, f"/{NAME}"), 120, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0, node.output()[-3000:]


def test_no_camera_info_publisher_is_said_and_labels_flow(graph):
    from sensor_msgs.msg import Image

    node, probe = graph
    camera = probe.node.create_publisher(Image, TOPIC, 10)
    probe.subscribe(Image, f"/{NAME}/label", 10)
    msg = stamped(probe, SCENE)
    delivered(probe, lambda: camera.publish(msg), f"/{NAME}/label", msg.header.frame_id, node)
    assert diagnostics_values(probe, f"/{NAME}")["camera_info"] == f"none received on {INFO_TOPIC}"
    assert probe.messages(f"/{NAME}/camera_info") == []


@pytest.mark.parametrize("camera_qos", ["default", "sensor_data"])
@pytest.mark.parametrize("consumer_qos", ["default", "sensor_data"])
def test_every_qos_pairing_of_camera_and_consumer_gets_the_labels(graph, camera_qos, consumer_qos):
    """create_publisher(Image, topic, 10) / qos_profile_sensor_data on the camera side,
    create_subscription(Image, topic, cb, 10) / qos_profile_sensor_data on the consumer side: each
    of 8 frames reaches the consumer, with the labels of the inference core."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    node, probe = graph
    profiles = {"default": 10, "sensor_data": qos_profile_sensor_data}
    camera = probe.node.create_publisher(Image, TOPIC, profiles[camera_qos])
    topic = f"/{NAME}/label"
    probe.unsubscribe(topic)
    probe.subscribe(Image, topic, profiles[consumer_qos])
    expected = reference_labels(SCENE, PARAMS["max_side"])
    sends = []
    for _ in range(8):
        msg = stamped(probe, SCENE)
        out, n = delivered(probe, lambda: camera.publish(msg), topic, msg.header.frame_id, node)
        np.testing.assert_array_equal(labels_of(out), expected)
        sends.append(n)
    print(f"camera {camera_qos} -> consumer {consumer_qos}: 8 frames in {sum(sends)} sends")
    probe.node.destroy_publisher(camera)
    assert "incompatible" not in node.output()


@pytest.mark.parametrize("offset_s, words", [(-3600.0, ["behind", "--clock"]),
                                             (5.0, ["ahead of", "chrony"])])
def test_stamps_from_another_clock_are_segmented_and_warned_of(graph, offset_s, words):
    """A recording replayed without --clock (hour-old stamps), a camera 5 s ahead: labels with the
    frames' own stamps, and /diagnostics WARNs with the skew and its likely cause."""
    from sensor_msgs.msg import Image

    node, probe = graph
    camera = probe.node.create_publisher(Image, TOPIC, 10)
    probe.subscribe(Image, f"/{NAME}/label", 10)
    before = int(diagnostics_values(probe, f"/{NAME}").get("skewed_stamps", 0))
    msg = stamped(probe, SCENE, offset_s)
    out, _ = delivered(probe, lambda: camera.publish(msg), f"/{NAME}/label", msg.header.frame_id, node)
    assert out.header == msg.header
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE, PARAMS["max_side"]))
    level, message, values = wait_for(
        lambda: (s := diagnostics_status(probe, f"/{NAME}")) and int(s[2].get("skewed_stamps", 0)) > before and s,
        30, "the skew counted on /diagnostics", node)
    assert level == 1 and all(w in message for w in words), message
    # the skew is the stamp's distance from the node's clock when the frame arrived: the offset,
    # plus however long the frame (or its resend) took to get there -- seconds on a loaded host
    said = float(re.search(r"are ([0-9.]+) s", message).group(1))
    transit = said - abs(offset_s) if offset_s < 0 else abs(offset_s) - said
    assert 0 <= transit < 5, message
    assert "segmented anyway" in message and abs(float(values["stamp_skew_s"]) + offset_s) < 5
    assert "dropped_stale" not in values
    probe.node.destroy_publisher(camera)


def _camera_info(header, h: int, w: int):
    import copy

    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(header=copy.deepcopy(header), height=h, width=w, distortion_model="plumb_bob")
    info.k = [100.0, 0.0, 63.5, 0.0, 101.0, 47.5, 0.0, 0.0, 1.0]
    info.p = [100.0, 0.0, 63.5, -10.0, 0.0, 101.0, 47.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.1, -0.01, 0.0, 0.0, 0.0]
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 8, 4, 112, 88
    return info


def test_camera_info_is_paired_by_stamp_and_scaled_to_the_label(graph):
    from sensor_msgs.msg import CameraInfo, Image

    node, probe = graph
    camera = probe.node.create_publisher(Image, TOPIC, 10)
    infos = probe.node.create_publisher(CameraInfo, INFO_TOPIC, 10)
    probe.subscribe(Image, f"/{NAME}/label", 10)

    def both(msg, info_stamp=None):
        info = _camera_info(msg.header, H, W)
        if info_stamp is not None:
            info.header.stamp = info_stamp
        infos.publish(info)          # the driver's camera_info first, then its image, one stamp
        camera.publish(msg)

    def send_both(msg, info_stamp=None):
        """(label, ~/camera_info) of msg, sent with its camera_info until both came back: the
        node's camera_info subscription may be discovered after its image subscription, and a
        frame that comes before any camera_info goes out without one."""
        out, _ = delivered(probe, lambda: both(msg, info_stamp), f"/{NAME}/camera_info", msg.header.frame_id, node)
        label = wait_for(lambda: next((m for m in probe.messages(f"/{NAME}/label")
                                       if m.header.frame_id == msg.header.frame_id), None), 30, "~/label", node)
        return label, out

    # output_resolution input: the camera's camera_info, with the label's header
    msg = stamped(probe, SCENE)
    label, out = send_both(msg)
    assert out.header == label.header == msg.header and (out.height, out.width) == (label.height, label.width) == (H, W)
    sent = _camera_info(msg.header, H, W)
    assert list(out.k) == list(sent.k) and list(out.p) == list(sent.p) and list(out.d) == list(sent.d)
    assert diagnostics_values(probe, f"/{NAME}")["camera_info"].endswith(f"received on {INFO_TOPIC}")
    # output_resolution network at max_side 64: a 48x64 label, K and P for it (pixel centres kept)
    assert set_params(probe, NAME, output_resolution="network", max_side=64)[0].successful
    try:
        msg = stamped(probe, SCENE)
        label, out = send_both(msg)
        assert (label.height, label.width) == (out.height, out.width) == (48, 64)
        np.testing.assert_allclose(out.k, [50.0, 0, 31.5, 0, 50.5, 23.5, 0, 0, 1])
        np.testing.assert_allclose(out.p, [50.0, 0, 31.5, -5.0, 0, 50.5, 23.5, 0, 0, 0, 1, 0])
        assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (4, 2, 56, 44)
        # a driver that stamps its camera_info apart: the latest is used, counted and said
        from builtin_interfaces.msg import Time

        msg = stamped(probe, SCENE)
        _, out = send_both(msg, Time(sec=12, nanosec=0))
        assert out.header.stamp == msg.header.stamp
        wait_for(lambda: int(diagnostics_values(probe, f"/{NAME}").get("camera_info_unpaired", 0)) > 0, 30,
                 "camera_info_unpaired counted", node)
        assert "has the stamp of the frame" in node.output()
    finally:
        assert set_params(probe, NAME, output_resolution="input", max_side=PARAMS["max_side"])[0].successful
        probe.node.destroy_publisher(camera)
        probe.node.destroy_publisher(infos)


def test_sim_time_with_a_clock_publisher(tmp_path):
    """use_sim_time true and a /clock a day into a simulation: frames stamped in sim time are
    segmented, no skew is reported, and /diagnostics is stamped in sim time too."""
    require_isolated_network()
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    name = "segpp_sim"
    node = NodeProcess(tmp_path, {**PARAMS, "use_sim_time": True}, {"image": "/sim_cam/image"}, name=name)
    probe = Probe(f"{name}_probe")
    clock_pub = probe.node.create_publisher(Clock, "/clock", 10)
    sim = {"ns": 86_400 * 10**9}
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            sim["ns"] += 50_000_000
            clock_pub.publish(Clock(clock=Time(sec=sim["ns"] // 10**9, nanosec=sim["ns"] % 10**9)))
            time.sleep(0.05)
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.subscribe(Image, f"/{name}/label", 10)
        camera = probe.node.create_publisher(Image, "/sim_cam/image", 10)
        wait_for(lambda: diagnostics_values(probe, f"/{name}"), 120, "the node's first diagnostics", node)
        for _ in range(3):
            ns = sim["ns"]
            msg = stamped(probe, SCENE, stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9))
            out, _ = delivered(probe, lambda: camera.publish(msg), f"/{name}/label", msg.header.frame_id, node)
            assert out.header == msg.header
        level, message, values = diagnostics_status(probe, f"/{name}")
        assert "skewed_stamps" not in values and level == 0, (message, values)
        # this node's /diagnostics (the module's other node runs on the wall clock beside it)
        ours = [m for m in probe.messages("/diagnostics") if any(s.name.startswith(f"/{name}:") for s in m.status)]
        stamp = ours[-1].header.stamp
        assert abs(stamp.sec - sim["ns"] / 1e9) < 60, stamp          # sim time, not the wall clock
    finally:
        stop.set()
        ticker.join(5)
        probe.close()
        assert node.stop() == 0, node.output()[-3000:]


# -- persons: detector boxes in, track ids out --------------------------------------------------------
POSE_NAME = "segpp_persons"
POSE_TOPIC = "/walk_cam/image"
DETECTIONS = "/walk_detector/detections"


@pytest.fixture(scope="module")
def walk():
    from segpp_ros.training.data.walk import scripted_walk

    return scripted_walk()


@pytest.fixture(scope="module")
def persons_graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from segpp.msg import PersonKeypointsArray
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray
    from visualization_msgs.msg import MarkerArray

    params = {"device": "cpu", "max_side": 256, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.3,
              "pose.enable": True, "pose.box_source": "detections", "pose.min_box_area": 100,
              "pose.detections_wait_ms": 2000.0}
    node = NodeProcess(tmp_path_factory.mktemp("persons"), params, {"image": POSE_TOPIC, "detections": DETECTIONS},
                       name=POSE_NAME)
    probe = Probe(f"{POSE_NAME}_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    for leaf, kind in (("persons", Detection2DArray), ("keypoints", PersonKeypointsArray), ("markers", MarkerArray)):
        probe.subscribe(kind, f"/{POSE_NAME}/{leaf}", QoSProfile(depth=100))    # reliable, as a consumer writes
    probe.camera = probe.node.create_publisher(Image, POSE_TOPIC, 10)
    probe.detector = probe.node.create_publisher(Detection2DArray, DETECTIONS, 10)
    wait_for(lambda: diagnostics_values(probe, f"/{POSE_NAME}"), 120, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0, node.output()[-3000:]


def detections_of(header, boxes) -> object:
    """A detector's message: one 'person' detection per box [x0, y0, x1, y1] (pixel centres)."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

    from segpp_ros.ros.vision import box_message

    out = Detection2DArray(header=header)
    for i, box in enumerate(boxes):
        out.detections.append(Detection2D(header=header, bbox=box_message(box), id=f"det{i}", results=[
            ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id="person", score=0.9))]))
        # a car the filter must drop
    out.detections.append(Detection2D(header=header, bbox=box_message(np.array([0, 0, 20, 20], np.float32)),
                                      results=[ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id="car",
                                                                                                    score=0.99))]))
    return out


def persons_for(probe, node, image, boxes=None):
    """Send a frame (and its detections, when given) until its ~/persons arrive; the message."""
    msg = stamped(probe, image)

    def send() -> None:
        if boxes is not None:
            probe.detector.publish(detections_of(msg.header, boxes))
        probe.camera.publish(msg)
    out, _ = delivered(probe, send, f"/{POSE_NAME}/persons", msg.header.frame_id, node, timeout=60, resend_s=5)
    return msg, out


def test_track_ids_over_a_scripted_walk(persons_graph, walk):
    """A passes in front of B, walks out of view and comes back: with the detector's boxes no id
    switches, the returning person keeps the id, and ~/keypoints and ~/markers carry the same ids."""
    from segpp_ros.training.data.walk import id_switches, match_identities

    node, probe = persons_graph
    assigned = []
    for frame in walk:
        names = list(frame.boxes)
        msg, out = persons_for(probe, node, frame.image, [frame.boxes[n] for n in names])
        assert len(out.detections) == len(names)                       # the car is not a person
        boxes = [np.array([d.bbox.center.position.x - (d.bbox.size_x - 1) / 2,
                           d.bbox.center.position.y - (d.bbox.size_y - 1) / 2,
                           d.bbox.center.position.x + (d.bbox.size_x - 1) / 2,
                           d.bbox.center.position.y + (d.bbox.size_y - 1) / 2]) for d in out.detections]
        matched = match_identities(frame.boxes, boxes, min_iou=0.9)
        assert set(matched) == set(names)
        assert all(d.results[0].hypothesis.class_id == "person" for d in out.detections)
        assigned.append({n: int(out.detections[i].id) for n, i in matched.items()})
        keypoints = wait_for(lambda: next((m for m in probe.messages(f"/{POSE_NAME}/keypoints")
                                           if m.header.frame_id == msg.header.frame_id), None), 30, "keypoints", node)
        assert sorted(p.track_id for p in keypoints.persons) == sorted(int(d.id) for d in out.detections)
    assert id_switches(assigned) == 0, assigned
    gone = [i for i, f in enumerate(walk) if "A" not in f.boxes]
    assert gone and gone[-1] + 1 < len(walk)                           # A left and came back
    assert assigned[gone[0] - 1]["A"] == assigned[gone[-1] + 1]["A"]
    markers = wait_for(lambda: probe.messages(f"/{POSE_NAME}/markers"), 30, "markers", node)[-1].markers
    texts = {m.text for m in markers if m.text}
    assert texts == {str(i) for i in assigned[-1].values()}


def test_touching_persons_get_one_skeleton_each_from_detector_boxes(persons_graph, walk):
    """Where A passes in front of B the segmentation sees one person component; the detector's two
    boxes give two persons. A frame whose detections never come falls back to the segmentation's
    boxes, counted and said."""
    from segpp_ros.inference import Segmenter
    from segpp_ros.inference.pose import person_boxes
    from segpp_ros.inference.tracking import inside, iou

    node, probe = persons_graph
    crossing = next(f for f in walk if len(f.boxes) == 2 and iou(f.boxes["A"], f.boxes["B"]) > 0.1)
    with_boxes = persons_for(probe, node, crossing.image, list(crossing.boxes.values()))[1]
    assert len(with_boxes.detections) == 2
    labels = Segmenter(None, device="cpu", max_side=256)(crossing.image).labels
    segmented = person_boxes(labels, (11, 12), min_area=100)
    # the segmentation has A and B in one component: one box holds both persons
    assert any(all(inside(t, b.box) > 0.75 for t in crossing.boxes.values()) for b in segmented), segmented
    assert set_params(probe, POSE_NAME, **{"pose.detections_wait_ms": 200.0})[0].successful
    try:
        without = persons_for(probe, node, crossing.image)[1]
    finally:
        assert set_params(probe, POSE_NAME, **{"pose.detections_wait_ms": 2000.0})[0].successful
    assert len(without.detections) == len(segmented)                   # the segmentation's boxes
    wait_for(lambda: int(diagnostics_values(probe, f"/{POSE_NAME}").get("detections_missing", 0)) > 0, 30,
             "detections_missing counted", node)
    assert "its person boxes come from the segmentation instead" in node.output()
