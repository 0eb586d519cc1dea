"""README claims about the node that no other test held it to, each through the real node
process: QoS (a mismatched peer counted, named and told the fix; ROS's qos_overrides parameters),
max_frame_age (opt-in, live; stamp 0 is never stale), and the start-up refusals of a
variant mismatch and of a wrong-type parameter given with -p; precision (bf16 on the CPU) and
threads as they run."""
from __future__ import annotations

import numpy as np
import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import (
    NodeProcess,
    Probe,
    diagnostics_status,
    diagnostics_values,
    labels_of,
    make_frame,
    reference_labels,
    refused_start,
    require_isolated_network,
    roundtrip,
    set_params,
    wait_for,
)

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NAME = "segpp_claims"
TOPIC = "/claims_cam/image"
PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.2,
          "pose.enable": False}
SCENE = render_scene(10_000_801, 96, 128).image


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    node = NodeProcess(tmp_path_factory.mktemp("claims"), PARAMS, {"image": TOPIC}, name=NAME)
    probe = Probe(f"{NAME}_probe")
    probe.subscribe(Image, f"/{NAME}/label")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    probe.camera = probe.publisher(Image, TOPIC)
    wait_for(lambda: diagnostics_values(probe, f"/{NAME}"), 120, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0


def test_an_incompatible_subscriber_is_counted_named_and_told_the_fix(graph):
    # the labels are reliable and volatile: a subscriber asking for transient local cannot be matched
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    node, probe = graph
    probe.subscribe(Image, f"/{NAME}/label", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    wait_for(lambda: int(diagnostics_values(probe, f"/{NAME}").get("incompatible_qos", 0)) > 0, 30,
             "the incompatible_qos counter", node)
    assert diagnostics_values(probe, f"/{NAME}")["incompatible_qos_peers"] == f"a subscriber of /{NAME}/label"
    wait_for(lambda: f"a subscriber of /{NAME}/label requests a QoS this node's publisher does not offer "
                     "(durability" in node.output(), 10, "the log line naming topic, peer and policy", node)
    assert f"qos_overrides./{NAME}/label.publisher.durability" in node.output()


def test_max_frame_age_zero_turns_the_check_off_live_and_zero_stamps_are_never_stale(graph):
    node, probe = graph
    expected = reference_labels(SCENE, PARAMS["max_side"])
    zero = make_frame(probe, SCENE)
    zero.header.stamp.sec, zero.header.stamp.nanosec = 0, 0      # a driver that does not stamp
    out = roundtrip_as_sent(graph, zero)
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (0, 0)
    np.testing.assert_array_equal(labels_of(out), expected)
    before = int(diagnostics_values(probe, f"/{NAME}").get("dropped_stale", 0))
    old = make_frame(probe, SCENE)
    old.header.stamp.sec -= 600                              # ten minutes old: answered by default
    np.testing.assert_array_equal(labels_of(roundtrip_as_sent(graph, old)), expected)
    assert int(diagnostics_values(probe, f"/{NAME}").get("dropped_stale", 0)) == before
    assert set_params(probe, NAME, max_frame_age=1.0)[0].successful
    try:
        older = make_frame(probe, SCENE)
        older.header.stamp.sec -= 600
        probe.camera.publish(older)
        wait_for(lambda: int(diagnostics_values(probe, f"/{NAME}").get("dropped_stale", 0)) > before, 30,
                 "dropped_stale with max_frame_age 1", node, every=lambda: probe.camera.publish(older))
    finally:
        assert set_params(probe, NAME, max_frame_age=0.0)[0].successful
    np.testing.assert_array_equal(labels_of(roundtrip_as_sent(graph, old)), expected)      # live: answered again


def roundtrip_as_sent(graph, msg):
    """roundtrip() re-stamps each send; these frames must keep the stamp they were built with."""
    node, probe = graph
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    base = msg.header.frame_id

    def answered():
        for out in probe.messages(f"/{NAME}/label"):
            if out.header.frame_id == base:
                return out
        return None
    probe.camera.publish(msg)
    out = wait_for(answered, 30, f"the answer to {base}", node, every=lambda: probe.camera.publish(msg), period=0.5)
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == stamp
    return out


def test_qos_overrides_parameters_change_an_output_and_an_input(tmp_path):
    """ROS's standard qos_overrides.<topic>.<publisher|subscription>.<policy> parameters: the labels
    made best effort, the input reliable (it then refuses a best-effort camera, named)."""
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    name = "segpp_overridden"
    overrides = {f"qos_overrides./{name}/label.publisher.reliability": "best_effort",
                 f"qos_overrides./{name}/label.publisher.depth": 3,
                 "qos_overrides./ovr/image.subscription.reliability": "reliable"}
    node = NodeProcess(tmp_path, {**PARAMS, **overrides}, {"image": "/ovr/image"}, name=name)
    probe = Probe(f"{name}_probe")
    try:
        probe.subscribe(Image, f"/{name}/label", QoSProfile(depth=3, reliability=ReliabilityPolicy.BEST_EFFORT))
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.camera = probe.publisher(Image, "/ovr/image", reliable=True)
        out = roundtrip((node, probe), make_frame(probe, SCENE), f"/{name}/label", 120)
        np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE, PARAMS["max_side"]))
        log = node.output()
        assert f"outputs best_effort, keep_last 3, volatile: /{name}/label" in log, log[-3000:]
        assert "inputs reliable, keep_last 1, volatile: /ovr/image" in log, log[-3000:]
        # a reliable subscriber is now incompatible with the labels, a best-effort camera with the input
        probe.subscribe(Image, f"/{name}/label", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        probe.publisher(Image, "/ovr/image")
        wait_for(lambda: {f"a subscriber of /{name}/label", "a publisher of /ovr/image"} <= set(
            (diagnostics_values(probe, f"/{name}") or {}).get("incompatible_qos_peers", "").split(", ")), 30,
            "both incompatible peers named on /diagnostics", node)
        wait_for(lambda: "the publisher of /ovr/image offers a QoS this node's subscription cannot accept "
                         "(reliability" in node.output(), 10, "the input's warning", node)
    finally:
        probe.close()
        assert node.stop() == 0


@pytest.mark.parametrize("override, words", [({"variant": "b2"}, ["variant", "'b2'", "MiT-B0"]),
                                             ({"max_side": "big"}, ["max_side", "big"])])
def test_start_up_refusals_name_the_parameter(tmp_path, override, words):
    require_isolated_network()
    log = refused_start(tmp_path, {**PARAMS, **override}, "segpp_refused", alone=True)
    for word in words:
        assert word in log, (word, log[-2000:])


def test_the_configuration_on_diagnostics_is_what_runs(graph):
    # precision auto resolves to fp32 on the CPU; the threads the forward pass ran with are the
    # parameter's 1, not PyTorch's default (every core of the machine)
    node, probe = graph
    roundtrip(graph, make_frame(probe, SCENE), f"/{NAME}/label")
    values = wait_for(lambda: (v := diagnostics_values(probe, f"/{NAME}")) and int(v["frames_out"]) > 0 and v, 30,
                      "diagnostics after a frame", node)
    assert values["precision"] == "fp32" and values["threads"] == "1"
    assert "warm-up: 1 frames in" in node.output()


def test_bf16_through_the_node_is_the_cores_bf16(tmp_path):
    """precision bf16 on the CPU: the node's labels are the core's bf16 labels, which differ from
    fp32's on this scene (so a node that ignored the parameter would fail here)."""
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    scene = render_scene(10_000_801, 180, 240).image            # resized to 96x128 on the way in
    expected = reference_labels(scene, PARAMS["max_side"], precision="bf16")
    assert (expected != reference_labels(scene, PARAMS["max_side"])).any()
    name = "segpp_bf16"
    node = NodeProcess(tmp_path, {**PARAMS, "precision": "bf16"}, {"image": "/bf16/image"}, name=name)
    probe = Probe(f"{name}_probe")
    try:
        probe.subscribe(Image, f"/{name}/label")
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
        probe.camera = probe.publisher(Image, "/bf16/image")
        out = roundtrip((node, probe), make_frame(probe, scene), f"/{name}/label", 120)
        np.testing.assert_array_equal(labels_of(out), expected)
        wait_for(lambda: (diagnostics_values(probe, f"/{name}") or {}).get("precision") == "bf16", 30,
                 "precision bf16 on /diagnostics", node)
    finally:
        probe.close()
        assert node.stop() == 0


def documented_diagnostics() -> tuple[set[str], set[str], set[str]]:
    """(keys always present, keys present once non-zero, prefixes of key families such as
    bad_input_<kind>) of the model's status, as docs/node.md and docs/pose.md list them."""
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    always: set[str] = set()
    optional: set[str] = set()
    families: set[str] = set()
    table = docs.joinpath("node.md").read_text().split("Key/values:", 1)[1].split("\n\n", 2)[1]
    for row in table.splitlines()[2:]:
        keys_cell, meaning = row.split(" | ", 1)
        keys = re.findall(r"`([^`]+)`", keys_cell)
        if keys == ["pose", "pose_*"]:
            continue                                   # listed in docs/pose.md, read below
        for key in keys:
            if "<" in key:
                families.add(key.split("<")[0])
            else:
                (optional if "present once non-zero" in meaning else always).add(key)
    paragraph = docs.joinpath("pose.md").read_text().split("/diagnostics carries", 1)[1].split("\n\n")[0]
    before, after = paragraph.split("once non-zero", 1)
    always |= set(re.findall(r"`(pose(?:_\w+)?)`", before))
    optional |= set(re.findall(r"`(pose(?:_\w+)?)`", after))
    return always, optional, families


def test_diagnostics_carry_every_documented_key_with_plausible_values(graph):
    from segpp_ros.model import PRESETS

    node, probe = graph
    always, optional, families = documented_diagnostics()
    assert {"frames_in", "latency_p95_ms", "rendered_color", "pose_errors"} <= always | optional    # the parse
    for _ in range(3):
        roundtrip(graph, make_frame(probe, SCENE), f"/{NAME}/label")
    level, message, values = wait_for(
        lambda: (s := diagnostics_status(probe, f"/{NAME}")) and s[0] == 0 and int(s[2]["frames_out"]) >= 3 and s,
        30, "an OK status after three frames", node)
    assert message == "segmenting"
    assert always <= set(values), f"documented but missing: {sorted(always - set(values))}"
    undocumented = [k for k in values if k not in always | optional and not any(map(k.startswith, families))]
    assert not undocumented, f"on /diagnostics but not in the docs: {undocumented}"
    # pose is off on this node: its timings are nan until keypoints were computed (docs/pose.md)
    assert values["pose_p50_ms"] == "nan"
    number = {k: float(v) for k, v in values.items()
              if k.endswith(("_hz", "_ms")) and k != "budget_costs_ms" and not k.startswith("pose_")}
    assert all(v >= 0 for v in number.values()), {k: v for k, v in number.items() if not v >= 0}
    assert 3 <= int(values["frames_out"]) <= int(values["frames_in"])
    assert number["latency_p50_ms"] <= number["latency_p95_ms"]
    # per frame: network <= model time <= latency, so their medians are ordered the same way
    assert 0 < number["network_p50_ms"] <= number["model_p50_ms"] <= number["latency_p50_ms"]
    assert (values["device"], values["precision"], values["threads"]) == ("cpu", "fp32", "1")
    assert (values["max_side"], values["input_topic"], values["pose"]) == ("128", TOPIC, "off")
    assert values["merge_preset"] in PRESETS and values["merge_budget_ms"] == "0" and values["weights"]
    assert int(values["dropped_overwritten"]) >= 0
