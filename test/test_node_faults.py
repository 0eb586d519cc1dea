"""Faults injected into the real node process: logging in any order of severities, dead and stuck
workers, undecodable and hostile input, clock skew, parameter storms, signals at bad moments.

The node runs with SEGPP_FAULT_INJECTION=1, so frames whose frame_id starts with segpp-fault:
make its inference thread fail, die or stall on purpose (segpp_ros/harness/faults.py).
"""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from segpp_ros.training.data.scenes import render_scene

from .rosgraph import (
    NodeProcess,
    Probe,
    counter,
    diagnostics_status,
    labels_of,
    make_frame,
    require_isolated_network,
    roundtrip,
    send_until,
    set_params,
    wait_for,
)
from .rosgraph import reference_labels as labels_for

pytestmark = pytest.mark.ros_node   # node-level: make test runs these on Jazzy too

NAME = "segpp_faults"
IMAGE_TOPIC = "/fault_cam/image"
H, W = 120, 200
NODE_PARAMS = {"device": "cpu", "max_side": 128, "threads": 1, "warmup_frames": 1, "diagnostics_period": 0.25,
               "pose.enable": False, "no_image_warning": 1.0}
FAULTS = {"SEGPP_FAULT_INJECTION": "1"}
START_TIMEOUT = 120.0
SCENE = render_scene(10_000_777, H, W).image
OK, WARN, ERROR = 0, 1, 2


def start(tmp_path, name: str, params: dict | None = None, topic: str = IMAGE_TOPIC, camera=None):
    """A node process with fault injection and a probe subscribed to its outputs and diagnostics;
    camera: (message type, topic) the probe publishes on (default: Image on ``topic``)."""
    require_isolated_network()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    node = NodeProcess(tmp_path, {**NODE_PARAMS, **(params or {})}, {"image": topic}, name=name, env=FAULTS)
    probe = Probe(f"{name}_probe")
    probe.subscribe(Image, f"/{name}/label")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=200))
    probe.camera = probe.publisher(*(camera or (Image, topic)))
    wait_for(lambda: diagnostics_status(probe, f"/{name}"), START_TIMEOUT, "the node's first diagnostics", node)
    return node, probe


def stop(node: NodeProcess, probe: Probe) -> str:
    probe.close()
    code = node.stop()
    log = node.output()
    assert code == 0, f"node exited with {code}:\n{log[-3000:]}"
    return log


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    node, probe = start(tmp_path_factory.mktemp("faults"), NAME)
    yield node, probe
    log = stop(node, probe)
    assert "Traceback" not in log, log[-3000:]


def status(probe: Probe, name: str = NAME):
    return diagnostics_status(probe, f"/{name}")


def reference_labels(image: np.ndarray, merge="none") -> np.ndarray:
    return labels_for(image, NODE_PARAMS["max_side"], merge)


def fault(probe: Probe, action: str, image: np.ndarray = SCENE):
    msg = make_frame(probe, image)
    msg.header.frame_id = f"segpp-fault:{action}"
    return msg


def good_answer(graph, name: str = NAME) -> None:
    out = roundtrip(graph, make_frame(graph[1], SCENE), f"/{name}/label")
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))


def clean(log: str) -> None:
    for words in ("Traceback", "Logger severity", "context is invalid"):
        assert words not in log, f"{words!r} in the node's output:\n{log[-3000:]}"


def streaming(probe: Probe, stop_event: threading.Event, period: float = 0.03) -> threading.Thread:
    """A thread publishing SCENE every ``period`` seconds until ``stop_event``."""
    def stream() -> None:
        msg = make_frame(probe, SCENE)
        while not stop_event.is_set():
            msg.header.stamp = probe.now_msg()
            probe.camera.publish(msg)
            time.sleep(period)
    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    return thread


# -- logging at two severities, in both orders ----------------------------------------------------
def test_a_warning_then_an_error_then_warnings_leave_the_node_working(tmp_path):
    """The silence warning (timer thread), then a failing frame (error, inference thread), then
    bad input (warning, inference thread): every line logged, the node still segments."""
    name = "segpp_warn_first"
    node, probe = start(tmp_path, name)
    graph = (node, probe)
    try:
        wait_for(lambda: status(probe, name)[0] == WARN and "no image" in status(probe, name)[1], 30,
                 "the silence warning", node)
        send_until(graph, fault(probe, "raise"), lambda: counter(probe, "errors", f"/{name}") > 0, "an error")
        send_until(graph, make_frame(probe, np.zeros((16, 16, 3), np.uint8)),
                   lambda: counter(probe, "bad_input_too_small", f"/{name}") > 0, "a too-small frame")
        good_answer(graph, name)
        assert node.alive()
    finally:
        log = stop(node, probe)
    assert "no image on /fault_cam/image" in log and "frame failed: InjectedFault" in log
    assert "at least 32 px" in log
    clean(log)


def test_an_error_first_then_timer_warnings_leave_the_node_working(tmp_path):
    """A failing frame first (error), then the silence warning from the diagnostics timer: the
    second severity used to escape rclpy.spin and end the process with a traceback."""
    name = "segpp_error_first"
    node, probe = start(tmp_path, name)
    graph = (node, probe)
    try:
        send_until(graph, fault(probe, "raise"), lambda: counter(probe, "errors", f"/{name}") > 0, "an error")
        wait_for(lambda: status(probe, name)[0] == WARN and "no image" in status(probe, name)[1], 30,
                 "the silence warning after the error", node)
        time.sleep(0.5)                              # a few more timer ticks at WARN
        assert node.alive()
        good_answer(graph, name)
    finally:
        log = stop(node, probe)
    assert "frame failed: InjectedFault" in log and "no image on /fault_cam/image" in log
    clean(log)


# -- input the node must refuse -------------------------------------------------------------------
def test_frames_below_the_network_minimum_are_bad_input(graph):
    node, probe = graph
    tiny = make_frame(probe, np.zeros((16, 16, 3), np.uint8))
    before = counter(probe, "bad_input_too_small", f"/{NAME}")
    send_until(graph, tiny, lambda: counter(probe, "bad_input_too_small", f"/{NAME}") > before, "a refusal")
    assert counter(probe, "errors", f"/{NAME}") == 0
    good_answer(graph)


def test_a_huge_raw_header_is_refused_before_its_data_is_read(graph):
    node, probe = graph
    huge = make_frame(probe, SCENE, height=8192, width=8192, step=8192 * 3)   # data: one small frame
    send_until(graph, huge, lambda: counter(probe, "bad_input_too_large", f"/{NAME}") > 0, "a too_large refusal")
    assert counter(probe, "bad_input_size", f"/{NAME}") == 0
    assert set_params(probe, node=NAME, max_input_pixels=H * W - 1)[0].successful
    try:
        before = counter(probe, "bad_input_too_large", f"/{NAME}")
        send_until(graph, make_frame(probe, SCENE), lambda: counter(probe, "bad_input_too_large", f"/{NAME}") > before,
                   "the live limit")
    finally:
        assert set_params(probe, node=NAME, max_input_pixels=4096 * 4096)[0].successful
    good_answer(graph)


def test_undecodable_input_is_a_warning_until_good_frames_return(graph):
    node, probe = graph
    bad = make_frame(probe, SCENE, encoding="nv12")
    send_until(graph, bad, lambda: status(probe)[0] == WARN and "bad_input_encoding" in status(probe)[1], "WARN",
               period=0.1)
    level, message, _ = status(probe)
    assert "'nv12' is not supported" in message
    good = make_frame(probe, SCENE)
    send_until(graph, good, lambda: status(probe)[0] == OK, "OK with good frames", period=0.1)


def test_stamps_ahead_of_the_node_clock_warn_of_clock_skew(graph):
    node, probe = graph
    ahead = make_frame(probe, SCENE)

    def publish_ahead() -> None:
        ahead.header.stamp = probe.now_msg()
        ahead.header.stamp.sec += 10
        probe.camera.publish(ahead)
    publish_ahead()
    wait_for(lambda: status(probe)[0] == WARN and "ahead of this node's clock" in status(probe)[1], 30,
             "the clock-skew warning", node, every=publish_ahead)
    assert counter(probe, "skewed_stamps", f"/{NAME}") > 0
    good_answer(graph)


# -- dead and stuck workers -----------------------------------------------------------------------
def test_a_dead_inference_thread_is_an_error_and_comes_back(graph):
    node, probe = graph
    # re-sent only while nothing was seen (best effort may drop it): each one kills the thread again
    send_until(graph, fault(probe, "kill"), lambda: status(probe)[0] == ERROR and "died" in status(probe)[1],
               "ERROR after the thread died", period=2.0)
    level, message, values = status(probe)
    assert "the inference thread died (InjectedDeath" in message and "restarted it" in message, message
    assert int(values["worker_restarts"]) >= 1
    good_answer(graph)                               # the restarted thread segments again


def test_a_stuck_inference_thread_is_an_error(graph):
    node, probe = graph
    # sent until the thread sits on it (a stall frame left in the slot stalls it once more)
    send_until(graph, fault(probe, "stall=4"), lambda: status(probe)[0] == ERROR and "on one frame" in status(probe)[1],
               "ERROR while stuck", period=0.1)
    message = status(probe)[1]
    assert "inference thread has been on one frame for" in message and "stuck" in message
    good_answer(graph)                               # after the stall it works again
    send_until(graph, make_frame(probe, SCENE), lambda: status(probe)[0] == OK, "OK again", period=0.1)


# -- parameters -----------------------------------------------------------------------------------
def test_a_refused_publish_is_counted_logged_and_the_next_frame_published(graph):
    """rclpy refuses the outputs of a segpp-fault:publish frame (a TypeError, as for any sample it
    cannot take): publish_errors counts them, one line names the topic, the thread goes on."""
    node, probe = graph
    send_until(graph, fault(probe, "publish"), lambda: counter(probe, "publish_errors", f"/{NAME}") > 0,
               "the publish_errors counter")
    assert not [m for m in probe.messages(f"/{NAME}/label") if m.header.frame_id == "segpp-fault:publish"]
    good_answer(graph)
    wait_for(lambda: f"publishing on /{NAME}/label failed" in node.output(), 10, "the log line", node)


def test_a_parameter_storm_ends_with_the_last_value_and_no_errors(graph):
    """merge.preset switched 100 times a second while frames stream: the last value set is the
    one applied, nothing fails, every change is acknowledged."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    node, probe = graph
    client = AsyncParameterClient(probe.node, NAME)
    assert client.wait_for_services(timeout_sec=30)
    stop_frames = threading.Event()
    streamer = streaming(probe, stop_frames, period=0.05)
    futures, presets = [], ["fast", "2x2", "none", "hq"]
    errors_before = counter(probe, "errors", f"/{NAME}")
    try:
        for i in range(300):
            futures.append(client.set_parameters([Parameter("merge.preset", value=presets[i % 4])]))
            time.sleep(0.01)
        futures.append(client.set_parameters([Parameter("merge.preset", value="downsample")]))
        wait_for(lambda: all(f.done() for f in futures), 60, "every SetParameters response", node)
    finally:
        stop_frames.set()
        streamer.join(5)
    assert all(f.result().results[0].successful for f in futures)
    out = roundtrip(graph, make_frame(probe, SCENE), f"/{NAME}/label")
    np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE, "downsample"))
    wait_for(lambda: status(probe)[2]["merge_preset"] == "downsample", 10, "merge_preset in diagnostics", node)
    assert counter(probe, "errors", f"/{NAME}") == errors_before
    assert set_params(probe, node=NAME, merge__preset="none")[0].successful


def test_a_pose_model_that_fails_to_load_is_tried_once_per_switch(tmp_path):
    broken = tmp_path / "broken_pose.safetensors"
    broken.write_bytes(b"not a checkpoint")
    name = "segpp_pose_broken"
    node, probe = start(tmp_path, name, {"pose.weights": str(broken), "pose.enable": False})
    graph = (node, probe)
    try:
        assert set_params(probe, node=name, pose__enable=True)[0].successful
        before = int(status(probe, name)[2]["frames_out"])
        # keep segmenting: ten frames later the load has been tried once, not ten times
        frame = make_frame(probe, SCENE)
        send_until(graph, frame, lambda: int(status(probe, name)[2]["frames_out"]) >= before + 10, "ten frames",
                   period=0.1)
        assert counter(probe, "pose_load_errors", f"/{name}") == 1
        assert status(probe, name)[2]["pose_merge_preset"] == "(not loaded)"
        assert set_params(probe, node=name, pose__enable=False)[0].successful
        assert set_params(probe, node=name, pose__enable=True)[0].successful
        send_until(graph, frame, lambda: counter(probe, "pose_load_errors", f"/{name}") == 2, "one more try",
                   period=0.1)
    finally:
        log = stop(node, probe)
    assert str(broken) in log and "cannot load the pose weights" in log
    clean(log)


# -- memory ---------------------------------------------------------------------------------------
def test_a_png_bomb_is_refused_with_bounded_memory(tmp_path):
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from segpp_ros.ros.conversions import rgb_to_compressed

    from .images import png_of_zeros

    name = "segpp_bomb"
    node, probe = start(tmp_path, name, {"transport": "compressed"}, topic="/bomb_cam/image",
                        camera=(CompressedImage, "/bomb_cam/image/compressed"))
    graph = (node, probe)
    try:
        png = rgb_to_compressed(SCENE, Header(stamp=probe.now_msg(), frame_id="png"), "png")
        roundtrip(graph, png, f"/{name}/label")
        rss_before = node.rss_mb()
        bomb = CompressedImage(format="png", data=png_of_zeros(16384, 16384))
        bomb.header.frame_id = "bomb"
        send_until(graph, bomb, lambda: counter(probe, "bad_input_too_large", f"/{name}") > 0, "the refusal")
        for _ in range(5):                            # a few more of them, then a good frame
            bomb.header.stamp = probe.now_msg()
            probe.camera.publish(bomb)
            time.sleep(0.1)
        out = roundtrip(graph, rgb_to_compressed(SCENE, Header(frame_id="png2"), "png"), f"/{name}/label")
        np.testing.assert_array_equal(labels_of(out), reference_labels(SCENE))
        grown = node.rss_mb() - rss_before
        assert grown < 200, f"RSS grew by {grown:.0f} MB"
    finally:
        log = stop(node, probe)
    assert "16384x16384" in log and "max_input_pixels" in log
    clean(log)


# -- signals --------------------------------------------------------------------------------------
def exited_cleanly(node: NodeProcess, code: int | None) -> None:
    log = node.output()
    assert code == 0, f"exit code {code} (None: still running after the deadline):\n{log[-3000:]}"
    clean(log)


def _exit_code(node: NodeProcess, within: float) -> int | None:
    try:
        return node.proc.wait(within)
    except Exception:  # noqa: BLE001 -- TimeoutExpired: reported by the caller
        return None


def test_sigint_twice_50ms_apart_while_frames_stream_exits_cleanly(tmp_path):
    name = "segpp_sigint"
    node, probe = start(tmp_path, name)
    done = threading.Event()
    streamer = streaming(probe, done)
    try:
        wait_for(lambda: int(status(probe, name)[2]["frames_out"]) >= 3, 60, "frames flowing", node)
        node.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        node.proc.send_signal(signal.SIGINT)
        code = _exit_code(node, 5.0)
    finally:
        done.set()
        streamer.join(5)
        probe.close()
        node.stop()
    exited_cleanly(node, code)


def test_sigterm_in_the_middle_of_a_frame_exits_cleanly_within_the_deadline(tmp_path):
    name = "segpp_sigterm"
    node, probe = start(tmp_path, name)
    try:
        send_until((node, probe), fault(probe, "stall=20"),
                   lambda: int(status(probe, name)[2]["frames_in"]) > 0, "the stalling frame to arrive")
        time.sleep(0.3)                               # the worker is inside the 20 s frame
        node.proc.send_signal(signal.SIGTERM)
        code = _exit_code(node, 5.0)
    finally:
        probe.close()
        node.stop()
    exited_cleanly(node, code)


def test_sigint_while_loading_exits_cleanly_and_cuts_the_warm_up_short(tmp_path):
    require_isolated_network()
    node = NodeProcess(tmp_path, {**NODE_PARAMS, "max_side": 1024, "warmup_frames": 100}, {"image": IMAGE_TOPIC},
                       name="segpp_early")
    try:
        wait_for(lambda: "loading the embedded segmentation model" in node.output(), 120, "the model loading", node)
        node.proc.send_signal(signal.SIGINT)
        code = _exit_code(node, 60.0)
    finally:
        node.stop()
    exited_cleanly(node, code)
    assert "warm-up: stopped after" in node.output()
