"""The latency budget in the real node process: a machine slowed down on purpose (the
segpp-fault:slow=F test hook makes each model stage of a frame take F times as long, inside
the time the node measures, as other work on the machine would) makes the segmentation step down its merge ladder at once and back up
once the slow-down ends, both budgets count and report what they miss, and invalid budgets are
refused with the reason. The controller's decisions themselves: test_budget.py."""
from __future__ import annotations

import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import (
    NodeProcess,
    Probe,
    diagnostics_status,
    make_frame,
    require_isolated_network,
    roundtrip,
    set_params,
    wait_for,
)

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NAME = "segpp_budget"
TOPIC = "/budget_cam/image"
BUDGET_MS = 250.0
# 25x slower, only downsample fits (measured on 1 thread, the whole Segmenter call on the CPU's
# fast frame path: none 22 ms, hq 26, 2x2 20, fast 26, downsample 9 at 240x400 -> 256 px), and
# `none` misses by far (25 x 22 = 550 ms): a slowed frame that runs it misses the budget even on
# a CPU twice as fast. (At 12x, the factor before the frame path got faster, a slowed `none`
# took about 260 ms: some of those frames met the 250 ms budget.)
SLOW = 25
PARAMS = {"device": "cpu", "max_side": 256, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.1,
          "merge.budget_ms": BUDGET_MS, "pose.merge.budget_ms": BUDGET_MS, "pose.box_source": "whole_frame"}
SCENE = render_scene(10_000_778, 240, 400).image


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from segpp.msg import PersonKeypointsArray
    from sensor_msgs.msg import Image

    node = NodeProcess(tmp_path_factory.mktemp("budget"), PARAMS, {"image": TOPIC}, name=NAME,
                       env={"SEGPP_FAULT_INJECTION": "1"})
    probe = Probe(f"{NAME}_probe")
    probe.subscribe(PersonKeypointsArray, f"/{NAME}/keypoints")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=200))
    probe.camera = probe.publisher(Image, TOPIC, reliable=True)
    wait_for(lambda: diagnostics_status(probe, f"/{NAME}"), 120, "the node's first diagnostics", node)
    yield node, probe
    probe.close()
    assert node.stop() == 0
    assert "Traceback" not in node.output()


def frame(graph, frame_id: str) -> dict[str, str]:
    """One frame through both models (answered on ~/keypoints, which follow the labels); the
    node's diagnostics published after the answer: the presets that frame ran with."""
    node, probe = graph
    msg = make_frame(probe, SCENE)
    msg.header.frame_id = frame_id
    # one frame at a time: a re-send while a slowed frame (~1 s) is still running would be a
    # second frame, and the presets read afterwards those of the frame after it (reliable
    # delivery: re-sent only if lost)
    roundtrip(graph, msg, f"/{NAME}/keypoints", resend_s=10.0)
    seen = len(probe.messages("/diagnostics"))
    # the second status after the answer: the first may have left the node before it
    wait_for(lambda: len(probe.messages("/diagnostics")) >= seen + 2, 10, "diagnostics after the answer", node)
    return diagnostics_status(probe, f"/{NAME}")[2]


Wanted = tuple[str, ...] | None


def presets_until(graph, frame_id: str, want: tuple[Wanted, Wanted], frames: int) -> list[tuple[str, str]]:
    """(segmentation, pose) preset after each frame, until both are among ``want`` (None: any; at
    most ``frames`` frames)."""
    seen = []
    for _ in range(frames):
        values = frame(graph, frame_id)
        seen.append((values["merge_preset"], values["pose_merge_preset"]))
        if all(w is None or got in w for w, got in zip(want, seen[-1])):
            break
    return seen


def test_a_slowed_machine_steps_down_and_back_up(graph):
    # the first frames calibrate (three passes down each ladder: 20 frames for segmentation, 16
    # for pose), then everything fits: most accurate
    calm = [presets_until(graph, "cam", ((), ()), 1)[0] for _ in range(22)]
    assert {seg for seg, _ in calm} == {"none", "hq", "2x2", "fast", "downsample"}, calm
    assert {pose for _, pose in calm} == {"none", "2x2", "hq", "fast"}, calm
    assert calm[-1] == ("none", "none"), calm
    # each stage now takes 25x as long: segmentation steps down within a few frames (to downsample,
    # the one step that fits, on a quiet machine; with other processes competing for the two
    # cores the calibration can rank the steps differently, so any step but none and hq passes
    # here: the choice itself is test_budget.py's). The pose budget cannot be met at all (39 ms x
    # 25) and which of its near-equal steps it then runs is decided by noise
    cheaper = ("2x2", "fast", "downsample")
    slow = presets_until(graph, f"segpp-fault:slow={SLOW}", (cheaper, None), 4)
    assert slow[-1][0] in cheaper, slow
    # every slowed frame that still ran `none` missed (the first one at least: the controller
    # learns of the slow-down from it); the frame that stepped may well fit (downsample does)
    ran_none = sum(seg == "none" for seg, _ in slow)
    assert ran_none >= 1 and slow[0][0] == "none", slow
    values = diagnostics_status(graph[1], f"/{NAME}")[2]
    assert float(values["budget_met_pct"]) < 100 and int(values["budget_missed"]) >= ran_none, (slow, values)
    assert float(values["pose_budget_met_pct"]) < 100 and int(values["pose_budget_missed"]) >= len(slow)
    assert values["merge_budget_ms"] == "250" and values["pose_merge_budget_ms"] == "250"
    assert values["budget_costs_ms"].startswith("none ") and "?" not in values["budget_costs_ms"]
    # the machine is fast again: back to the top once the slow frames leave the window (10)
    again = presets_until(graph, "cam", (("none",), ("none",)), 15)
    assert len(again) > 1 and again[-1] == ("none", "none"), again


def test_negative_budgets_are_refused_with_the_reason(graph):
    probe = graph[1]
    for name in ("merge.budget_ms", "pose.merge.budget_ms"):
        result = set_params(probe, NAME, **{name: -5.0})[0]
        assert not result.successful
        assert name in result.reason and "-5" in result.reason, result.reason
    # turning the budget off is a change like any other: the preset applies again
    assert set_params(probe, NAME, merge__budget_ms=0.0, merge__preset="2x2")[0].successful
    values = frame(graph, "cam")
    assert values["merge_preset"] == "2x2" and values["budget_met_pct"] == ""
    assert set_params(probe, NAME, merge__budget_ms=BUDGET_MS, merge__preset="none")[0].successful
