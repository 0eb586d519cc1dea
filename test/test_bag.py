"""segpp-bag: small bags built here from the bundled frames, in both ROS 2 storage formats and as
a ROS 1 bag, through the pipeline; the output bag's counts, headers, receive times and labels
against the inference core; frame selection, topic choice, the MP4, Ctrl-C, refusals."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader

from segpp_ros.cli import bag as cli
from segpp_ros.inference import Segmenter
from segpp_ros.inference.pose import PoseEstimator, person_boxes
from segpp_ros.bags.runner import BagError, Options, process
from segpp_ros.bags.synthetic import sample_images, stamped_header, write_image_bag
from segpp_ros.ros.conversions import image_to_rgb, rgb_to_compressed

SAMPLES = Path(__file__).resolve().parent.parent / "segpp_ros" / "samples"
H, W = 96, 192
MAX_SIDE = 128
OPTIONS = Options(device="cpu", backend="torch", max_side=MAX_SIDE)
T0 = 1_700_000_000 * 10**9          # header stamps: T0 + i x 100 ms; receive times 7 ms later


def frames(n: int) -> list[np.ndarray]:
    return sample_images(n, H, W, sorted(SAMPLES.glob("frame_*.jpg")))


def header(i: int):
    return stamped_header(i, T0)


def received(i: int) -> int:
    return T0 + i * 100_000_000 + 7_000_000


def write_bag(path: Path, images: list[np.ndarray], storage: str = "mcap",
              topics: tuple[str, ...] = ("/cam/image",)) -> None:
    """A ROS 2 bag with each image on every topic (raw, or JPEG on .../compressed topics)."""
    write_image_bag(path, images, storage, topics, start_ns=T0)


def read_bag(path: Path) -> dict[str, list[tuple[int, object, bytes]]]:
    """Topic -> [(receive time, message, raw bytes)] of a bag."""
    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append((timestamp, reader.deserialize(raw, connection.msgtype), raw))
    return out


def labels_of(msg) -> np.ndarray:
    return np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width)


def core_labels(image: np.ndarray) -> np.ndarray:
    return Segmenter(None, device="cpu", max_side=MAX_SIDE)(image).labels


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_bag_gets_what_the_node_publishes(tmp_path, storage) -> None:
    images = frames(4)
    write_bag(tmp_path / "in", images, storage)
    summary = process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", max_side=MAX_SIDE, storage=storage))
    assert (summary.topic, summary.read, summary.processed, summary.stopped) == ("/cam/image", 4, 4, False)
    got = read_bag(tmp_path / "out")
    source = read_bag(tmp_path / "in")
    counts = {topic: len(v) for topic, v in got.items()}
    assert counts == {"/cam/image": 4, "/segpp/label": 4, "/segpp/color": 4, "/segpp/overlay": 4,
                      "/segpp/keypoints": 4, "/segpp/persons": 4, "/segpp/label_info": 1, "/segpp/palette": 1,
                      "/segpp/keypoint_info": 1}, counts
    # the input copied byte for byte, at its receive times
    assert [(t, raw) for t, _, raw in got["/cam/image"]] == [(t, raw) for t, _, raw in source["/cam/image"]]
    pose = PoseEstimator(None, device="cpu")
    person_ids = [11, 12]                                   # Cityscapes person, rider
    for i, image in enumerate(images):
        expected = core_labels(image)
        for name in ("label", "color", "overlay", "keypoints", "persons"):
            timestamp, msg, _ = got[f"/segpp/{name}"][i]
            assert timestamp == received(i), name                                  # at the input's receive time
            assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
                f"cam_{i}", header(i).stamp.sec, header(i).stamp.nanosec), name  # the input's header
        label = got["/segpp/label"][i][1]
        assert label.encoding == "mono8"
        np.testing.assert_array_equal(labels_of(label), expected)
        colour = np.asarray(got["/segpp/color"][i][1].data, np.uint8).reshape(H, W, 3)
        np.testing.assert_array_equal(colour, Segmenter(None, device="cpu", max_side=MAX_SIDE).colorize(expected))
        persons = got["/segpp/keypoints"][i][1].persons
        assert len(persons) == len(pose(image, person_boxes(expected, person_ids)).persons)
    info = got["/segpp/label_info"][0][1]                     # vision_msgs/LabelInfo
    assert len(info.class_map) == 19 and info.class_map[11].class_name == "person"
    assert len(got["/segpp/palette"][0][1].colors) == 3 * 19
    assert len(got["/segpp/keypoint_info"][0][1].names) == 17


def test_the_output_topics_carry_the_qos_the_node_offers(tmp_path) -> None:
    """ros2 bag play publishes each topic with its recorded QoS: the info topics latched (transient
    local) as the node publishes them, the outputs reliable, the input as it was recorded."""
    from rosbags.interfaces import QosDurability, QosReliability

    write_bag(tmp_path / "in", frames(1))
    process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", max_side=MAX_SIDE, pose=False))
    with AnyReader([tmp_path / "out"]) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    for topic in ("/segpp/label_info", "/segpp/palette"):
        assert [(q.reliability, q.durability, q.depth) for q in qos[topic]] == [
            (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)], topic
    for topic in ("/segpp/label", "/segpp/color", "/segpp/overlay"):
        assert [(q.reliability, q.durability) for q in qos[topic]] == [(QosReliability.RELIABLE,
                                                                        QosDurability.VOLATILE)], topic
    assert qos["/cam/image"] == []                  # the test's input bag recorded none


def test_every_nth_frame_in_a_time_range(tmp_path) -> None:
    write_bag(tmp_path / "in", frames(10))
    # frames at 0.0, 0.1, ... 0.9 s from the start: [0.25, 0.85) holds frames 3..8, every 2nd of them
    summary = process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", max_side=MAX_SIDE, every=2,
                                                                 start_s=0.25, end_s=0.85, outputs=("label",)))
    got = read_bag(tmp_path / "out")
    assert [m.header.frame_id for _, m, _ in got["/segpp/label"]] == ["cam_3", "cam_5", "cam_7"]
    assert len(got["/cam/image"]) == 6 and summary.read == 6 and summary.processed == 3
    assert set(got) == {"/cam/image", "/segpp/label", "/segpp/label_info", "/segpp/palette"}


def test_only_the_outputs_asked_for_are_written(tmp_path) -> None:
    write_bag(tmp_path / "in", frames(2))
    process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", max_side=MAX_SIDE, outputs=("color",)))
    got = read_bag(tmp_path / "out")
    assert set(got) == {"/cam/image", "/segpp/color", "/segpp/label_info", "/segpp/palette"}
    assert len(got["/segpp/color"]) == 2


def test_the_first_image_topic_unless_told_and_compressed_input(tmp_path) -> None:
    images = frames(2)
    write_bag(tmp_path / "in", images, topics=("/cam/image", "/cam/image/compressed"))
    summary = process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", max_side=MAX_SIDE, pose=False))
    assert summary.topic == "/cam/image" and "/cam/image/compressed" in summary.note and "--topic" in summary.note
    summary = process(tmp_path / "in", tmp_path / "out2", Options(device="cpu", backend="torch", max_side=MAX_SIDE, pose=False,
                                                                  topic="/cam/image/compressed"))
    got = read_bag(tmp_path / "out2")
    assert summary.processed == 2 and "/cam/image" not in got and "/segpp/keypoints" not in got
    for i, image in enumerate(images):
        jpeg = rgb_to_compressed(image, header(i))
        decoded = cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        np.testing.assert_array_equal(labels_of(got["/segpp/label"][i][1]), core_labels(np.ascontiguousarray(decoded)))


def test_a_ros1_bag(tmp_path) -> None:
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                      "builtin_interfaces/msg/Time"))
    images = frames(2)
    with Writer1(tmp_path / "in.bag") as writer:
        connection = writer.add_connection("/cam/image", Image.__msgtype__, typestore=store)
        for i, image in enumerate(images):
            stamp = header(i).stamp
            msg = Image(header=Header(seq=i, stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec), frame_id=f"cam_{i}"),
                        height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3, data=image.reshape(-1))
            writer.write(connection, received(i), store.serialize_ros1(msg, Image.__msgtype__))
    summary = process(tmp_path / "in.bag", tmp_path / "out", Options(device="cpu", backend="torch", max_side=MAX_SIDE, pose=False,
                                                                     outputs=("label",)))
    got = read_bag(tmp_path / "out")
    assert summary.processed == 2 and len(got["/cam/image"]) == 2
    for i, image in enumerate(images):
        copied = got["/cam/image"][i][1]           # converted to ROS 2: same pixels and header
        np.testing.assert_array_equal(image_to_rgb(copied), image)
        assert copied.header.frame_id == f"cam_{i}" and got["/cam/image"][i][0] == received(i)
        np.testing.assert_array_equal(labels_of(got["/segpp/label"][i][1]), core_labels(image))


def test_the_compiled_backend_labels_a_bag_as_the_compiled_core(tmp_path, capsys) -> None:
    """--backend openvino: each frame's labels are those of a Segmenter compiled the same way,
    and agree with PyTorch's to float rounding."""
    images = frames(2)
    write_bag(tmp_path / "in", images)
    assert cli.main([str(tmp_path / "in"), str(tmp_path / "out"), "--device", "cpu", "--backend", "openvino",
                     "--max-side", str(MAX_SIDE), "--no-pose", "--outputs", "label", "--quiet"]) == 0, \
        capsys.readouterr().err
    got = read_bag(tmp_path / "out")
    compiled = Segmenter(None, device="cpu", max_side=MAX_SIDE, backend="openvino")
    for i, image in enumerate(images):
        labels = labels_of(got["/segpp/label"][i][1])
        np.testing.assert_array_equal(labels, compiled(image).labels)
        assert (labels == core_labels(image)).mean() > 0.999


def test_the_overlays_as_a_video(tmp_path, capsys) -> None:
    write_bag(tmp_path / "in", frames(5))
    assert cli.main([str(tmp_path / "in"), "--video", str(tmp_path / "overlay.mp4"), "--device", "cpu",
                     "--backend", "torch", "--max-side", str(MAX_SIDE), "--quiet", "--every", "2"]) == 0
    assert "3 frames processed of 5 read" in capsys.readouterr().out
    video = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    count = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        assert frame.shape == (H, W, 3)
        count += 1
    assert count == 3
    assert abs(video.get(cv2.CAP_PROP_FPS) - 5.0) < 0.1           # every 2nd frame of a 10 Hz camera


def test_ctrl_c_leaves_a_readable_bag(tmp_path) -> None:
    write_bag(tmp_path / "in", frames(60))
    err = open(tmp_path / "stderr", "w")
    proc = subprocess.Popen([sys.executable, "-m", "segpp_ros.cli.bag", str(tmp_path / "in"), str(tmp_path / "out"),
                             "--device", "cpu", "--max-side", str(MAX_SIDE)], stdout=subprocess.PIPE, stderr=err,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not re.search(r"\b[1-9]\d*/60\b", (tmp_path / "stderr").read_text()):   # the bar: frames done
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped early" in out, (out, (tmp_path / "stderr").read_text())
    got = read_bag(tmp_path / "out")                       # readable: metadata written on the way out
    done = len(got["/segpp/label"])
    assert 1 <= done < 60 and len(got["/segpp/keypoints"]) == len(got["/segpp/overlay"]) == done
    assert len(got["/cam/image"]) == done                 # the frame in progress finished, no later one read
    assert f"{done} frames processed" in out


def test_refusals_name_the_problem(tmp_path, capsys) -> None:
    write_bag(tmp_path / "in", frames(1))
    with pytest.raises(BagError, match="no image topic '/nope'.*/cam/image"):
        process(tmp_path / "in", tmp_path / "out", Options(device="cpu", backend="torch", topic="/nope"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(BagError, match="cannot read the bag .*junk"):
        process(tmp_path / "junk", tmp_path / "out2", OPTIONS)
    for argv, words in ((["in"], "either an output bag"), (["in", "in"], "exists already"),
                        (["in", "o", "--start", "2", "--end", "1"], "--end must be after"),
                        (["in", "o", "--outputs", "labels"], "--outputs takes")):
        with pytest.raises(SystemExit):
            cli.parse_args([str(tmp_path / a) if i < 2 and not a.startswith("-") else a for i, a in enumerate(argv)])
        assert words in capsys.readouterr().err


# a robot's params file: pipeline settings the bag's own options do not name, and a custom merge
ROBOT_PARAMS = """\
/**:
  ros__parameters:
    use_sim_time: false
    backend: torch
    output_resolution: network
    merge.preset: custom
    merge.custom: |
      stages:
        - kv: {mode: bsm, ratio: 0.6, cell: [2, 2]}
        - {}
        - q: {mode: n2d, cell: [2, 2]}
        - {}
segpp:
  ros__parameters:
    pose:
      box_source: whole_frame
      max_persons: 1
"""


def test_a_params_file_labels_the_bag_as_that_node_would(tmp_path, capsys) -> None:
    from segpp_ros.model.merge import TokenMerge

    images = frames(2)
    write_bag(tmp_path / "in", images)
    (tmp_path / "segpp.yaml").write_text(ROBOT_PARAMS)
    assert cli.main([str(tmp_path / "in"), str(tmp_path / "out"), "--params-file", str(tmp_path / "segpp.yaml"),
                     "--device", "cpu", "--max-side", str(MAX_SIDE), "--quiet"]) == 0, capsys.readouterr().err
    got = read_bag(tmp_path / "out")
    seg = Segmenter(None, device="cpu", max_side=MAX_SIDE, merge={"stages": [
        {"kv": {"mode": "bsm", "ratio": 0.6, "cell": [2, 2]}}, {}, {"q": {"mode": "n2d", "cell": [2, 2]}}, {}]})
    assert seg.model.merge.stages[2].q == TokenMerge("n2d", 0.0, (2, 2))
    pose = PoseEstimator(None, device="cpu")
    from segpp_ros.inference.pose import whole_frame_box

    for i, image in enumerate(images):
        labels = labels_of(got["/segpp/label"][i][1])
        assert labels.shape == (64, 128)                                      # output_resolution: network
        np.testing.assert_array_equal(labels, seg(image, output="network").labels)   # the custom merge
        assert not np.array_equal(labels, Segmenter(None, device="cpu", max_side=MAX_SIDE)(image, output="network")
                                  .labels), "the scene must tell the merge settings apart"
        persons = got["/segpp/keypoints"][i][1].persons                        # pose.box_source: whole_frame
        expected = pose(image, [whole_frame_box(H, W)]).persons
        assert len(persons) == 1 and list(persons[0].box) == [0.0, 0.0, W - 1.0, H - 1.0]
        np.testing.assert_allclose([[k.x, k.y, k.score] for k in persons[0].keypoints], expected[0].keypoints,
                                   atol=1e-4)


def test_a_params_file_with_a_name_the_node_does_not_have_is_refused(tmp_path, capsys) -> None:
    write_bag(tmp_path / "in", frames(1))
    (tmp_path / "typo.yaml").write_text("/**:\n  ros__parameters:\n    max_sides: 512\n")
    assert cli.main([str(tmp_path / "in"), str(tmp_path / "out"), "--params-file", str(tmp_path / "typo.yaml")]) == 1
    assert "sets 'max_sides', which the segpp node does not have" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("/**:\n  ros__parameters:\n    merge.preset: custom\n"
                                       "    merge.custom: '{stages: [{}, {}]}'\n")
    assert cli.main([str(tmp_path / "in"), str(tmp_path / "out"), "--params-file", str(tmp_path / "bad.yaml")]) == 1
    assert "merge.custom stages must be a list of 4 entries" in capsys.readouterr().err
    (tmp_path / "other.yaml").write_text("camera_driver:\n  ros__parameters:\n    fps: 30\n")
    assert cli.main([str(tmp_path / "in"), str(tmp_path / "out"), "--params-file", str(tmp_path / "other.yaml")]) == 1
    assert "no entry for the node 'segpp'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture(autouse=True)
def one_thread():
    """The pipeline and the reference in one process on one thread: bit-identical labels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
