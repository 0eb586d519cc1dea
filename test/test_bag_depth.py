"""segpp-bag --depth-topic: a small RGB-D bag built here (the bundled frames in colour, a plane at
2.0 m as depth, recorded 20 ms after its colour frame and stamped 3 ms later), its 3-D outputs
against the expected geometry; a depth missing for a frame, a depth that cannot be related to
the colour image, and the pairing rules alone (DepthPairing)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from segpp_ros.bags.pairing import DepthPairing
from segpp_ros.bags.runner import BagError, Options, process, typestore
from segpp_ros.cli import bag as cli
from segpp_ros.inference import Segmenter
from segpp_ros.ros.conversions import rgb_to_image

from .test_bag import H, MAX_SIDE, W, frames, header, labels_of, read_bag, received

K = [100.0, 0.0, (W - 1) / 2, 0.0, 100.0, (H - 1) / 2, 0.0, 0.0, 1.0]
PLANE_M = 2.0
DEPTH_LAG_NS = 3_000_000           # depth stamps trail the colour's by 3 ms (within depth.max_skew_ms)
RECORD_LAG_NS = 20_000_000         # and are recorded 20 ms after it
OPTIONS = Options(device="cpu", backend="torch", max_side=MAX_SIDE, depth_topic="/cam/depth/image_raw",
                  params={"points.stride": 4, "points.color": True, "pose.box_source": "whole_frame"})


def stamp_of(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def write_rgbd_bag(path: Path, n: int, depth_frames: set[int], depth_scale: int = 1,
                   depth_k: list[float] = K) -> None:
    """Colour frames 0..n-1 on /cam/image with /cam/camera_info; depth (16UC1, PLANE_M) with its
    camera_info for the frames in ``depth_frames``, at 1/depth_scale of the colour size."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    store = typestore()
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    cons = {topic: writer.add_connection(topic, kind, typestore=store) for topic, kind in (
        ("/cam/image", "sensor_msgs/msg/Image"), ("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("/cam/depth/image_raw", "sensor_msgs/msg/Image"), ("/cam/depth/camera_info", "sensor_msgs/msg/CameraInfo"))}
    h, w = H // depth_scale, W // depth_scale
    for i, image in enumerate(frames(n)):
        head = header(i)
        writer.write(cons["/cam/camera_info"], received(i),
                     serialize_message(CameraInfo(header=head, height=H, width=W, k=K)))
        writer.write(cons["/cam/image"], received(i), serialize_message(rgb_to_image(image, head)))
        if i in depth_frames:
            ns = head.stamp.sec * 10**9 + head.stamp.nanosec + DEPTH_LAG_NS
            dhead = Header(stamp=stamp_of(ns), frame_id="cam_depth_optical")
            writer.write(cons["/cam/depth/camera_info"], received(i) + RECORD_LAG_NS,
                         serialize_message(CameraInfo(header=dhead, height=h, width=w, k=depth_k)))
            depth = Image(header=dhead, height=h, width=w, encoding="16UC1", step=2 * w,
                          data=np.full((h, w), int(PLANE_M * 1000), np.uint16).tobytes())
            writer.write(cons["/cam/depth/image_raw"], received(i) + RECORD_LAG_NS, serialize_message(depth))
    writer.close()


def test_a_bag_with_depth_gets_keypoints_in_metres_and_labelled_points(tmp_path) -> None:
    """Frames 0-2 have depth, frame 3 none: three frames of 3-D outputs, at the frames' receive
    times with their headers' stamps and the depth's frame_id; every joint inside the image at
    2.0 m (2 cm) with x, y back-projected (1 cm); every 4th pixel both ways a point at 2.0 m whose
    label is the label image's there. The depth topics are copied into the output."""
    write_rgbd_bag(tmp_path / "in", 4, {0, 1, 2})
    summary = process(tmp_path / "in", tmp_path / "out", OPTIONS)
    assert summary.processed == 4 and summary.depth == {"paired": 3, "missing": 1, "refused": 0}
    got = read_bag(tmp_path / "out")
    assert len(got["/segpp/label"]) == 4 and len(got["/segpp/keypoints"]) == 4
    assert len(got["/segpp/keypoints_3d"]) == 3 and len(got["/segpp/points"]) == 3
    assert len(got["/cam/depth/image_raw"]) == 3 and len(got["/cam/depth/camera_info"]) == 3
    labels = {m.header.frame_id: labels_of(m) for _, m, _ in got["/segpp/label"]}
    flat = {m.header.frame_id: m for _, m, _ in got["/segpp/keypoints"]}
    cx, cy = K[2], K[5]
    palette = Segmenter(None, device="cpu").palette
    for i, (timestamp, msg, _) in enumerate(got["/segpp/keypoints_3d"]):
        assert timestamp == received(i) and msg.header.stamp.sec == header(i).stamp.sec
        assert msg.header.stamp.nanosec == header(i).stamp.nanosec and msg.header.frame_id == "cam_depth_optical"
        assert len(msg.persons) == len(flat[f"cam_{i}"].persons) == 1
        inside = 0
        for k3, k2 in zip(msg.persons[0].keypoints, flat[f"cam_{i}"].persons[0].keypoints):
            if not (0 <= round(k2.x) < W and 0 <= round(k2.y) < H):
                continue
            inside += 1
            assert abs(k3.z - PLANE_M) < 0.02
            assert abs(k3.x - (k2.x - cx) * k3.z / 100) < 0.01 and abs(k3.y - (k2.y - cy) * k3.z / 100) < 0.01
        assert inside >= 5
    for i, (timestamp, cloud, _) in enumerate(got["/segpp/points"]):
        assert timestamp == received(i) and cloud.header.frame_id == "cam_depth_optical"
        names = [f.name for f in cloud.fields]
        assert names == ["x", "y", "z", "label", "rgb"]        # points.color
        dtype = np.dtype({"names": names, "formats": ["<f4", "<f4", "<f4", "<u2", "<f4"],
                          "offsets": [f.offset for f in cloud.fields], "itemsize": cloud.point_step})
        points = np.frombuffer(np.asarray(cloud.data, np.uint8).tobytes(), dtype)
        assert len(points) == len(range(0, H, 4)) * len(range(0, W, 4))
        np.testing.assert_allclose(points["z"], PLANE_M)
        u = np.rint(points["x"] * 100 / PLANE_M + cx).astype(int)
        v = np.rint(points["y"] * 100 / PLANE_M + cy).astype(int)
        assert set(u % 4) == {0} and set(v % 4) == {0}
        np.testing.assert_array_equal(points["label"], labels[f"cam_{i}"][v, u])
        rgb = points["rgb"].view(np.uint32)
        np.testing.assert_array_equal(np.stack([rgb >> 16, (rgb >> 8) & 255, rgb & 255], 1),
                                      palette[points["label"]])


def test_a_depth_that_does_not_relate_to_the_colour_image_is_refused_and_the_2d_outputs_go_on(tmp_path) -> None:
    write_rgbd_bag(tmp_path / "in", 2, {0, 1}, depth_scale=2, depth_k=[70.0, 0, 20.0, 0, 70.0, 20.0, 0, 0, 1])
    summary = process(tmp_path / "in", tmp_path / "out", OPTIONS)
    assert summary.depth == {"paired": 0, "missing": 0, "refused": 2}
    assert "not the colour image" in summary.depth_note and "/cam/depth/image_raw" in summary.depth_note
    got = read_bag(tmp_path / "out")
    assert len(got["/segpp/label"]) == 2 and "/segpp/points" not in got and "/segpp/keypoints_3d" not in got


def test_a_half_size_depth_is_scaled_through_the_camera_infos(tmp_path) -> None:
    half = [50.0, 0.0, (W / 2 - 1) / 2, 0.0, 50.0, (H / 2 - 1) / 2, 0.0, 0.0, 1.0]
    write_rgbd_bag(tmp_path / "in", 1, {0}, depth_scale=2, depth_k=half)
    summary = process(tmp_path / "in", tmp_path / "out", OPTIONS)
    assert summary.depth == {"paired": 1, "missing": 0, "refused": 0}
    cloud = read_bag(tmp_path / "out")["/segpp/points"][0][1]
    assert cloud.width == len(range(0, H // 2, 4)) * len(range(0, W // 2, 4))


def test_depth_topics_that_are_not_in_the_bag_are_refused(tmp_path, capsys) -> None:
    write_rgbd_bag(tmp_path / "in", 1, {0})
    with pytest.raises(BagError, match="no raw image topic '/nope'.*/cam/depth/image_raw"):
        process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", depth_topic="/nope"))
    with pytest.raises(BagError, match="no depth camera_info '/cam/info'.*--depth-info-topic"):
        process(tmp_path / "in", tmp_path / "out2", Options(device="cpu", backend="torch",
                                                            depth_topic="/cam/depth/image_raw",
                                                            depth_info_topic="/cam/info"))
    with pytest.raises(SystemExit):
        cli.parse_args([str(tmp_path / "in"), str(tmp_path / "out3"), "--outputs", "label,points"])
    assert "--depth-topic" in capsys.readouterr().err


def test_pairing_waits_for_a_later_depth_and_decides_in_order() -> None:
    ms = 1_000_000
    pairing: DepthPairing[str] = DepthPairing(max_skew_ns=10 * ms, lookahead_ns=500 * ms)
    # frame a (stamp 100) waits: no depth yet
    assert pairing.frame(100 * ms, 100 * ms, "a") == []
    # a depth stamped 103 ms, recorded later: a is decided with it
    assert pairing.depth(103 * ms, 120 * ms, "d103") == [("a", "d103")]
    # b (200 ms) waits; a depth at 195 ms does not decide it (a nearer one may follow) ...
    assert pairing.frame(200 * ms, 200 * ms, "b") == []
    assert pairing.depth(195 * ms, 210 * ms, "d195") == []
    # ... c waits behind b; the depth at 202 ms decides b (none later can be nearer), not c
    assert pairing.frame(205 * ms, 215 * ms, "c") == []
    assert pairing.depth(202 * ms, 220 * ms, "d202") == [("b", "d202")]
    assert pairing.depth(207 * ms, 225 * ms, "d207") == [("c", "d207")]
    # d (400 ms): depth stops; decided once the recording is 500 ms past it, with none in range
    assert pairing.frame(400 * ms, 400 * ms, "d") == []
    assert pairing.frame(600 * ms, 600 * ms, "e") == []
    assert pairing.frame(901 * ms, 901 * ms, "f") == [("d", None)]
    # the end of the bag decides the rest
    assert pairing.finish() == [("e", None), ("f", None)]
