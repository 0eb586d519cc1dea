"""Depth through the node process (real rclpy and Fast DDS): ~/keypoints_3d and ~/points from an
aligned depth image with its camera_info, in both encodings; the skew limit; a depth image of
another size (scaled through the camera_infos, or refused when they do not relate); a bad
encoding refused while the 2-D outputs go on; ~/points built only while subscribed.

The scene: a 96x128 street scene in colour; the depth a plane at 2.0 m (fronto-parallel), so
every joint and every point lies at z = 2.0 m, x = (u - 63.5) z / 100, y = (v - 47.5) z / 100."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import NodeProcess, Probe, diagnostics_values, labels_of, require_isolated_network, wait_for

pytestmark = pytest.mark.ros_node

NAME = "segpp_rgbd"
IMAGE, DEPTH = "/rgbd/color/image", "/rgbd/depth/image_raw"
COLOR_INFO, DEPTH_INFO = "/rgbd/color/camera_info", "/rgbd/depth/camera_info"     # the siblings
H, W = 96, 128
K = [100.0, 0.0, 63.5, 0.0, 100.0, 47.5, 0.0, 0.0, 1.0]
PLANE_M = 2.0
PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.3,
          "pose.enable": True, "pose.box_source": "whole_frame", "depth.enable": True, "depth.max_skew_ms": 20.0,
          "points.stride": 4}
SCENE = render_scene(10_000_901, H, W).image
_stamps = [1_000]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from segpp.msg import PersonKeypoints3DArray, PersonKeypointsArray
    from sensor_msgs.msg import CameraInfo, Image

    node = NodeProcess(tmp_path_factory.mktemp("rgbd"), PARAMS, {"image": IMAGE, "depth": DEPTH}, name=NAME)
    probe = Probe(f"{NAME}_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.subscribe(Image, f"/{NAME}/label", QoSProfile(depth=50))
    probe.subscribe(PersonKeypointsArray, f"/{NAME}/keypoints", QoSProfile(depth=50))
    probe.subscribe(PersonKeypoints3DArray, f"/{NAME}/keypoints_3d", QoSProfile(depth=50))
    probe.pubs = {topic: probe.node.create_publisher(kind, topic, 10) for topic, kind in
                  ((IMAGE, Image), (DEPTH, Image), (COLOR_INFO, CameraInfo), (DEPTH_INFO, CameraInfo))}
    wait_for(lambda: diagnostics_values(probe, f"/{NAME}"), 120, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0, node.output()[-3000:]


def depth_image(stamp, encoding: str = "16UC1", scale: int = 1, frame_id: str = "rgbd_depth_optical"):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    h, w = H // scale, W // scale
    if encoding == "16UC1":
        data, step = np.full((h, w), int(PLANE_M * 1000), np.uint16), 2 * w
    elif encoding == "32FC1":
        data, step = np.full((h, w), PLANE_M, np.float32), 4 * w
    else:
        data, step = np.zeros((h, w, 3), np.uint8), 3 * w
    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=h, width=w, encoding=encoding, step=step,
                 data=data.tobytes())


def camera_info(stamp, k, h: int = H, w: int = W, frame_id: str = ""):
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    return CameraInfo(header=Header(stamp=stamp, frame_id=frame_id), height=h, width=w, k=k)


def send(probe, depth=None, depth_k=K, depth_delay_ns: int = 0, **depth_args):
    """One colour frame with its camera_info, and (unless ``depth`` is False) a depth image with
    its camera_info stamped ``depth_delay_ns`` later; returns the colour stamp (unique)."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image

    _stamps[0] += 1
    ns = _stamps[0] * 10**9
    stamp, later = Time(sec=ns // 10**9), Time(sec=(ns + depth_delay_ns) // 10**9,
                                                nanosec=(ns + depth_delay_ns) % 10**9)
    probe.pubs[COLOR_INFO].publish(camera_info(stamp, K))
    if depth is not False:
        scale = depth_args.get("scale", 1)
        probe.pubs[DEPTH_INFO].publish(camera_info(later, depth_k, H // scale, W // scale, "rgbd_depth_optical"))
        probe.pubs[DEPTH].publish(depth_image(later, **depth_args))
    probe.pubs[IMAGE].publish(rgb_to_image(SCENE, Header(stamp=stamp, frame_id="rgbd_color_optical")))
    return stamp


def by_stamp(probe, topic: str, stamp):
    return next((m for m in probe.messages(topic) if m.header.stamp == stamp), None)


def answered(probe, node, topic: str, **send_args):
    """Send until the frame's message on ``topic`` arrives (discovery may lose the first sends)."""
    sent = []

    def found():
        return next((m for s in sent if (m := by_stamp(probe, topic, s)) is not None), None)
    sent.append(send(probe, **send_args))
    return wait_for(found, 60, f"{topic}", node, every=lambda: sent.append(send(probe, **send_args)), period=2.0), \
        sent


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_keypoints_3d_from_both_encodings(graph, encoding):
    """Every joint at the plane's 2.0 m within 2 cm, x and y back-projected within 1 cm from its
    2-D keypoint; the image's stamp, the depth's frame_id; the same track ids as ~/keypoints."""
    node, probe = graph
    out, _ = answered(probe, node, f"/{NAME}/keypoints_3d", encoding=encoding)
    assert out.header.frame_id == "rgbd_depth_optical"
    flat = wait_for(lambda: by_stamp(probe, f"/{NAME}/keypoints", out.header.stamp), 30, "~/keypoints", node)
    assert [p.track_id for p in out.persons] == [p.track_id for p in flat.persons] and len(out.persons) == 1
    inside = 0
    for k3, k2 in zip(out.persons[0].keypoints, flat.persons[0].keypoints):
        assert k3.score == pytest.approx(k2.score)
        if not (-3 <= round(k2.x) <= W + 2 and -3 <= round(k2.y) <= H + 2):
            assert np.isnan(k3.z)                   # its window misses the depth image: no depth
            continue
        inside += 1
        assert abs(k3.z - PLANE_M) < 0.02
        assert abs(k3.x - (k2.x - 63.5) * k3.z / 100) < 0.01 and abs(k3.y - (k2.y - 47.5) * k3.z / 100) < 0.01
    assert inside >= 5


def test_the_point_cloud_only_while_subscribed(graph):
    """Nobody subscribes ~/points: none is built (rendered_points stays); a subscriber gets every
    4th pixel both ways at 2.0 m, each point's label the label image's at its pixel."""
    from sensor_msgs.msg import PointCloud2

    node, probe = graph
    answered(probe, node, f"/{NAME}/keypoints_3d")
    assert int(diagnostics_values(probe, f"/{NAME}").get("rendered_points", 0)) == 0
    probe.subscribe(PointCloud2, f"/{NAME}/points", 10)
    cloud, _ = answered(probe, node, f"/{NAME}/points")
    assert cloud.header.frame_id == "rgbd_depth_optical" and cloud.width == (H // 4) * (W // 4)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "label"]
    points = np.frombuffer(bytes(cloud.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u2")])
    np.testing.assert_allclose(points["z"], PLANE_M)
    labels = wait_for(lambda: by_stamp(probe, f"/{NAME}/label", cloud.header.stamp), 30, "~/label", node)
    np.testing.assert_array_equal(points["label"], labels_of(labels)[::4, ::4].reshape(-1))
    v, u = np.divmod(np.arange(len(points)), W // 4)
    np.testing.assert_allclose(points["x"], (4 * u - 63.5) * PLANE_M / 100, atol=1e-5)
    np.testing.assert_allclose(points["y"], (4 * v - 47.5) * PLANE_M / 100, atol=1e-5)
    wait_for(lambda: int(diagnostics_values(probe, f"/{NAME}").get("rendered_points", 0)) > 0, 30,
             "rendered_points counted", node)
    probe.unsubscribe(f"/{NAME}/points")


def test_a_depth_image_too_late_is_not_paired(graph):
    """Depth stamped 100 ms after the colour frame (depth.max_skew_ms 20): the frame keeps its
    2-D outputs, gets no 3-D ones, and is counted."""
    node, probe = graph
    before = int(diagnostics_values(probe, f"/{NAME}").get("depth_missing", 0))
    flat, sent = answered(probe, node, f"/{NAME}/keypoints", depth_delay_ns=100_000_000)
    wait_for(lambda: int(diagnostics_values(probe, f"/{NAME}").get("depth_missing", 0)) > before, 30,
             "depth_missing counted", node)
    assert by_stamp(probe, f"/{NAME}/keypoints_3d", flat.header.stamp) is None
    wait_for(lambda: "no depth image on /rgbd/depth/image_raw" in node.output(), 30, "the missing depth logged", node)


def test_a_half_size_depth_is_scaled_through_the_camera_infos(graph):
    node, probe = graph
    half = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]           # K scaled with the size
    out, _ = answered(probe, node, f"/{NAME}/keypoints_3d", scale=2, depth_k=half)
    depths = [k.z for k in out.persons[0].keypoints if not np.isnan(k.z)]
    assert len(depths) >= 5 and all(abs(z - PLANE_M) < 0.02 for z in depths)


def test_depth_that_cannot_be_used_is_refused_and_the_2d_outputs_go_on(graph):
    """A half-size depth whose camera_info is not the colour view scaled, and an rgb8 'depth':
    refused with the reason, counted; labels and keypoints still come."""
    node, probe = graph
    before = int(diagnostics_values(probe, f"/{NAME}").get("depth_refused", 0))
    wrong = [80.0, 0.0, 31.5, 0.0, 80.0, 23.5, 0.0, 0.0, 1.0]
    for args in ({"scale": 2, "depth_k": wrong}, {"encoding": "rgb8"}):
        flat, _ = answered(probe, node, f"/{NAME}/keypoints", **args)
        assert by_stamp(probe, f"/{NAME}/label", flat.header.stamp) is not None
        assert by_stamp(probe, f"/{NAME}/keypoints_3d", flat.header.stamp) is None
    wait_for(lambda: int(diagnostics_values(probe, f"/{NAME}").get("depth_refused", 0)) >= before + 2, 30,
             "depth_refused counted", node)
    # the node's log reaches its file when its stdout is flushed
    wait_for(lambda: "is not the colour image" in node.output() and "'rgb8' is not a depth image" in node.output(),
             30, "both refusals logged", node)
    assert "Traceback" not in node.output()
