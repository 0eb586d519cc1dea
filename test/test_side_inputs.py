"""The node's side inputs and vision_msgs, without DDS: camera_info pairing by stamp and scaling to
the label, a detector's boxes read back, ~/persons and ~/label_info built."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from segpp_ros.inference.pose import PersonPose, PoseResult
from segpp_ros.ros.camera_info import scaled
from segpp_ros.ros.realtime import ByStamp
from segpp_ros.ros.vision import box_message, detected_persons, label_info_message, parse_classes, persons_message


def test_by_stamp_pairs_exactly_falls_back_to_the_latest_and_waits_bounded() -> None:
    store: ByStamp[str] = ByStamp(keep=3)
    assert store.match(5) == (None, False)
    for stamp in (1, 2, 3, 4):
        store.put(stamp, f"info{stamp}")
    assert store.match(3) == ("info3", True) and store.match(1) == ("info4", False)   # 1 aged out
    assert store.received == 4
    start = time.monotonic()
    assert store.wait(9, 0.05) is None and time.monotonic() - start < 1.0
    threading.Timer(0.05, lambda: store.put(9, "late")).start()
    assert store.wait(9, 5.0) == "late"


def test_by_stamp_waits_for_a_late_item_only_while_stamps_pair() -> None:
    """A camera_info that trails its image by a few ms is still paired; a source that stamps
    apart costs no wait."""
    store: ByStamp[str] = ByStamp()
    store.put(1, "info1")
    assert store.match(1, late_s=5.0) == ("info1", True)
    threading.Timer(0.05, lambda: store.put(2, "info2")).start()
    assert store.match(2, late_s=5.0) == ("info2", True)          # arrived 50 ms after the frame
    start = time.monotonic()
    assert store.match(3, late_s=0.2) == ("info2", False)         # never came: the latest, after the wait
    assert time.monotonic() - start >= 0.2
    start = time.monotonic()
    assert store.match(4, late_s=5.0) == ("info2", False)         # stamped apart: no wait any more
    assert time.monotonic() - start < 1.0


def info(h: int = 480, w: int = 640) -> CameraInfo:
    msg = CameraInfo(height=h, width=w, distortion_model="plumb_bob", d=[0.1, 0.0, 0.0, 0.0, 0.0])
    msg.k = [500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0]
    msg.p = [500.0, 0.0, 319.5, -50.0, 0.0, 510.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 10, 20, 600, 400
    msg.binning_x = 1
    return msg


def test_camera_info_scaled_to_the_label() -> None:
    header = Header(stamp=Time(sec=7, nanosec=5), frame_id="cam")
    same = scaled(info(), header, (480, 640), (480, 640))
    assert same.header == header and list(same.k) == list(info().k) and (same.height, same.width) == (480, 640)
    half = scaled(info(), header, (480, 640), (240, 320))
    assert (half.height, half.width) == (240, 320) and list(half.d) == list(info().d) and half.binning_x == 1
    # fx, fy halve; the principal point maps pixel centres: (319.5 + 0.5) / 2 - 0.5 = 159.5
    np.testing.assert_allclose(half.k, [250.0, 0, 159.5, 0, 255.0, 119.5, 0, 0, 1])
    np.testing.assert_allclose(half.p, [250.0, 0, 159.5, -25.0, 0, 255.0, 119.5, 0, 0, 0, 1, 0])
    assert (half.roi.x_offset, half.roi.y_offset, half.roi.width, half.roi.height) == (5, 10, 300, 200)
    # a point projected with the scaled K lands where the label's resize puts it
    x, z = 0.3, 2.0
    u_full = info().k[0] * x / z + info().k[2]
    assert half.k[0] * x / z + half.k[2] == pytest.approx((u_full + 0.5) * 0.5 - 0.5)
    assert list(info().k) == [500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0]     # the input is untouched


def test_a_detectors_boxes_come_back_as_person_boxes() -> None:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

    def detection(box, class_id, score=0.8):
        return Detection2D(bbox=box_message(np.array(box, np.float32)), results=[
            ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_id, score=score))])
    msg = Detection2DArray(detections=[detection([10, 20, 49, 119], "person", 0.9), detection([0, 0, 9, 9], "car"),
                                       detection([600, 400, 700, 500], "0", 0.7), detection([900, 0, 950, 40], "1")])
    boxes = detected_persons(msg, parse_classes("person, 0"), 480, 640)
    assert [b.instance_id for b in boxes] == [0, 2]                    # the car and class 1 dropped
    np.testing.assert_array_equal(boxes[0].box, [10, 20, 49, 119])     # exactly back
    assert boxes[0].score == pytest.approx(0.9) and boxes[0].area == 40 * 100
    np.testing.assert_array_equal(boxes[1].box, [600, 400, 639, 479])  # clipped to the frame
    bbox = box_message(np.array([10, 20, 49, 119], np.float32))
    assert (bbox.center.position.x, bbox.center.position.y, bbox.size_x, bbox.size_y) == (29.5, 69.5, 40, 100)


def test_persons_and_label_info_messages() -> None:
    header = Header(stamp=Time(sec=3), frame_id="cam")
    kp = np.zeros((17, 3), np.float32)
    result = PoseResult([PersonPose(np.array([10, 20, 49, 119], np.float32), 0.75, 0, kp, track_id=4),
                         PersonPose(np.array([0, 0, 9, 9], np.float32), 0.5, 1, kp, track_id=9)], 1.0, 2.0)
    msg = persons_message(header, result)
    assert msg.header == header and [d.id for d in msg.detections] == ["4", "9"]
    first = msg.detections[0]
    assert first.header == header and first.results[0].hypothesis.class_id == "person"
    assert first.results[0].hypothesis.score == pytest.approx(0.75) and first.bbox.size_x == 40
    info = label_info_message(["road", "sky"], Time(sec=1))
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "road"), (1, "sky")]
    assert info.header.stamp.sec == 1
