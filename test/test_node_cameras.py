"""Several cameras through one node process (cameras: [front, rear]): each camera's labels and
keypoints on its own topics with its own header, frames of both cameras batched through one
forward pass with the labels each frame gets alone, a stopped camera that costs the other
nothing and shows up in its own diagnostics status, bad camera names refused at start."""
from __future__ import annotations

import time

import numpy as np
import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import (
    NodeProcess,
    Probe,
    diagnostics_status,
    labels_of,
    make_frame,
    reference_labels,
    refused_start,
    require_isolated_network,
    wait_for,
)

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NAME = "segpp_cams"
CAMERAS = ("front", "rear")
H, W = 96, 160
# the window is shorter than the cameras' period, so a frame held for the other camera is never
# replaced by its own camera's next one
PERIOD_S, WINDOW_MS = 0.4, 150.0
PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.2,
          "cameras": list(CAMERAS), "batch_window_ms": WINDOW_MS, "no_image_warning": 1.0,
          "pose.box_source": "whole_frame"}
SCENES = {camera: render_scene(10_000_800 + i, H, W).image for i, camera in enumerate(CAMERAS)}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from segpp.msg import PersonKeypointsArray
    from sensor_msgs.msg import Image

    node = NodeProcess(tmp_path_factory.mktemp("cameras"), PARAMS, {}, name=NAME)
    probe = Probe(f"{NAME}_probe")
    probe.cameras = {}
    for camera in CAMERAS:
        probe.subscribe(Image, f"/{NAME}/{camera}/label")
        probe.subscribe(PersonKeypointsArray, f"/{NAME}/{camera}/keypoints")
        probe.cameras[camera] = probe.publisher(Image, f"/{camera}/image", reliable=True)
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=200))
    wait_for(lambda: diagnostics_status(probe, f"/{NAME}", "camera rear"), 120, "the cameras' diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0
    assert "Traceback" not in node.output()


def answered(probe: Probe, topic: str, frames: list) -> list:
    """The answers on ``topic`` to ``frames``, in their order (None where none came yet)."""
    by_id = {m.header.frame_id: m for m in probe.messages(topic)}
    return [by_id.get(f.header.frame_id) for f in frames]


def send(probe: Probe, cameras: tuple[str, ...], count: int) -> dict[str, list]:
    """``count`` frames on each camera, all cameras at the same moment, every PERIOD_S."""
    sent: dict[str, list] = {camera: [] for camera in cameras}
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i * PERIOD_S - time.monotonic()))
        for camera in cameras:
            msg = make_frame(probe, SCENES[camera])
            msg.header.frame_id = f"{camera}_{msg.header.frame_id}"
            probe.cameras[camera].publish(msg)
            sent[camera].append(msg)
    return sent


def counter(values: dict[str, str], key: str) -> int:
    return int(values.get(key, 0))


def test_each_camera_gets_its_own_labels_and_keypoints_batched(graph):
    node, probe = graph
    before = diagnostics_status(probe, f"/{NAME}")[2]
    sent = send(probe, CAMERAS, 8)
    for camera, frames in sent.items():
        labels = wait_for(lambda: all(answered(probe, f"/{NAME}/{camera}/label", frames))
                          and answered(probe, f"/{NAME}/{camera}/label", frames), 60, f"{camera}'s labels", node)
        keypoints = wait_for(lambda: all(answered(probe, f"/{NAME}/{camera}/keypoints", frames))
                             and answered(probe, f"/{NAME}/{camera}/keypoints", frames), 60,
                             f"{camera}'s keypoints", node)
        reference = reference_labels(SCENES[camera], PARAMS["max_side"])
        for frame, label, persons in zip(frames, labels, keypoints):
            assert label.header == frame.header and persons.header == frame.header     # verbatim, own camera
            np.testing.assert_array_equal(labels_of(label), reference)
            assert len(persons.persons) == 1                                          # the whole frame
    # each camera's frames came on its own topic only
    for camera in CAMERAS:
        assert all(m.header.frame_id.startswith(camera) for m in probe.messages(f"/{NAME}/{camera}/label"))
    # both cameras' frames went through shared forward passes (the first pairs teach the window
    # the cameras' rates), and the labels above are those of each frame alone
    after = wait_for(lambda: (v := diagnostics_status(probe, f"/{NAME}")[2])
                     and counter(v, "frames_batched") > counter(before, "frames_batched") and v, 10,
                     "batched frames in the diagnostics", node)
    assert counter(after, "frames_batched") - counter(before, "frames_batched") >= 8, after
    for camera in CAMERAS:
        status = diagnostics_status(probe, f"/{NAME}", f"camera {camera}")[2]
        assert status["input_topic"] == f"/{camera}/image" and int(status["frames_out"]) >= 8, status


def test_a_stopped_camera_costs_the_other_nothing(graph):
    node, probe = graph
    send(probe, CAMERAS, 4)                                       # both running: the window waits for both
    front = diagnostics_status(probe, f"/{NAME}", "camera front")[2]
    sent = send(probe, ("front",), 10)["front"]                   # the rear camera has stopped
    wait_for(lambda: all(answered(probe, f"/{NAME}/front/label", sent)), 30, "every front frame answered", node)
    level, message, rear = wait_for(lambda: (s := diagnostics_status(probe, f"/{NAME}", "camera rear"))
                                    and s[0] == 1 and s, 10, "the rear camera's warning", node)
    assert "no image on /rear/image" in message, message
    after = wait_for(lambda: (s := diagnostics_status(probe, f"/{NAME}", "camera front"))
                     and int(s[2]["frames_out"]) >= int(front["frames_out"]) + 10 and s, 10,
                     "the front camera's count", node)
    # every front frame came out (none was replaced while waiting for the stopped camera: that
    # one would have no answer), and the front camera is healthy
    assert after[0] == 0, after
    model = diagnostics_status(probe, f"/{NAME}")
    assert model[0] == 0, model


@pytest.mark.parametrize("cameras, words", [(["front", "front"], "twice"), (["front", "rear/left"], "rear/left")])
def test_bad_camera_names_stop_the_node_with_the_reason(tmp_path, cameras, words):
    require_isolated_network()
    log = refused_start(tmp_path, {**PARAMS, "cameras": cameras}, "segpp_bad_cams")
    assert "cameras" in log and words in log, log[-2000:]
