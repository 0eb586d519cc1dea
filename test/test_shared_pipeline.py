"""The node and segpp-bag run one frame pipeline: the same params file gives the same labels and
keypoints from both, byte for byte. The file sets pipeline settings that neither adapter names
itself (output_resolution, a custom merge as a YAML block, pose.box_source, pose.max_persons):
each reaches both through the pipeline's one settings object."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.cli import bag as bag_cli

from .conftest import one_thread
from .rosgraph import NodeProcess, Probe, diagnostics_values, require_isolated_network, roundtrip, wait_for
from .test_bag import MAX_SIDE, ROBOT_PARAMS, frames, read_bag, write_bag

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

TOPIC = "/shared_cam/image"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The robot's params file, and what segpp-bag wrote with it for four frames."""
    tmp = tmp_path_factory.mktemp("shared")
    images = frames(4)
    write_bag(tmp / "in", images)
    (tmp / "segpp.yaml").write_text(ROBOT_PARAMS)
    with one_thread():
        assert bag_cli.main([str(tmp / "in"), str(tmp / "out"), "--params-file", str(tmp / "segpp.yaml"),
                             "--device", "cpu", "--max-side", str(MAX_SIDE), "--quiet"]) == 0
    return tmp, images, read_bag(tmp / "out")


@pytest.fixture(scope="module")
def graph(labelled):
    require_isolated_network()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from segpp.msg import PersonKeypointsArray
    from sensor_msgs.msg import Image

    tmp = labelled[0]
    # the robot's file as the node's params file, then what the test machine needs on top
    node = NodeProcess(tmp, {"device": "cpu", "threads": 1, "warmup_frames": 1, "max_side": MAX_SIDE,
                             "diagnostics_period": 0.5}, {"image": TOPIC}, params_file=tmp / "segpp.yaml")
    probe = Probe("segpp_test_shared_probe")
    probe.subscribe(Image, "/segpp/label")
    probe.subscribe(PersonKeypointsArray, "/segpp/keypoints", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    from diagnostic_msgs.msg import DiagnosticArray

    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.camera = probe.publisher(Image, TOPIC)
    wait_for(lambda: diagnostics_values(probe), 120, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0, node.output()[-3000:]


def test_node_and_bag_give_the_same_labels_and_keypoints_for_one_params_file(labelled, graph):
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_image

    _, images, bag = labelled
    node, probe = graph
    assert diagnostics_values(probe)["merge_preset"] == "custom"
    for i, image in enumerate(images):
        msg = rgb_to_image(image, Header(frame_id=f"shared_{i}"))
        label = roundtrip(graph, msg)
        expected = bag["/segpp/label"][i][1]
        assert (label.height, label.width, label.encoding) == (expected.height, expected.width, expected.encoding)
        assert (label.height, label.width) == (64, 128)                      # output_resolution from the file
        assert bytes(label.data) == bytes(np.asarray(expected.data, np.uint8)), f"frame {i}: labels differ"
        keypoints = wait_for(lambda: [m for m in probe.messages("/segpp/keypoints")
                                      if m.header.frame_id == msg.header.frame_id], 60, "the frame's keypoints", node)[0]
        want = bag["/segpp/keypoints"][i][1].persons
        assert len(keypoints.persons) == len(want) == 1                     # whole_frame boxes from the file
        np.testing.assert_array_equal(keypoints.persons[0].box, want[0].box)
        np.testing.assert_allclose([[k.x, k.y, k.score] for k in keypoints.persons[0].keypoints],
                                   [[k.x, k.y, k.score] for k in want[0].keypoints], atol=1e-5)
