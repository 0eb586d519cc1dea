"""The node's watchdog on a fake clock: what makes /diagnostics OK, WARN or ERROR."""
from __future__ import annotations

import math

from segpp_ros.ros.health import DEATH_HOLD_S, ERROR, OK, STUCK_MIN_S, WARN, Health, Stage, Verdict

TOPIC = "/camera/image"


def idle(p95_ms: float = 100.0) -> list[Stage]:
    return [Stage("inference", True, None, p95_ms)]


def stream(health: Health, start: float, end: float, hz: float, outcome) -> None:
    """Frames at ``hz`` from start to end; outcome(t) records what became of each."""
    t = start
    while t < end:
        health.input(t)
        outcome(t)
        t += 1.0 / hz


def test_ok_while_frames_are_segmented() -> None:
    h = Health(now=0.0)
    stream(h, 0.0, 4.0, 10, lambda t: h.output(t + 0.05))
    assert h.verdict(idle(), 5.0, TOPIC, now=4.0) == Verdict(OK, "segmenting")


def test_silence_warns_after_no_image_warning() -> None:
    h = Health(now=0.0)
    assert h.verdict(idle(), 5.0, TOPIC, now=4.9).level == OK
    v = h.verdict(idle(), 5.0, TOPIC, now=5.1)
    assert v.level == WARN and f"no image on {TOPIC} for 5 s" in v.message
    assert h.verdict(idle(), 0.0, TOPIC, now=100.0).level == OK          # 0 disables the warning


def test_mostly_undecodable_frames_warn_with_the_reason() -> None:
    h = Health(now=0.0)
    text = "image encoding 'nv12' is not supported; publish one of rgb8, ..."
    stream(h, 0.0, 3.0, 10, lambda t: h.problem("bad_input_encoding", text, t))
    v = h.verdict(idle(), 5.0, TOPIC, now=3.0)
    assert v.level == WARN
    assert "30 of the 30 frames processed" in v.message and "bad_input_encoding (30)" in v.message
    assert text in v.message
    # half or fewer is not a warning; good frames take over as the window moves on
    stream(h, 3.0, 9.0, 10, lambda t: h.output(t))
    assert h.verdict(idle(), 5.0, TOPIC, now=9.0).level == OK


def test_exactly_half_failing_is_not_yet_a_warning() -> None:
    h = Health(now=0.0)
    for i in range(10):
        h.input(i * 0.1)
        if i % 2:
            h.problem("dropped_stale", "old", i * 0.1)
        else:
            h.output(i * 0.1)
    assert h.verdict(idle(), 5.0, TOPIC, now=1.0).level == OK
    h.input(1.0)
    h.problem("errors", "frame failed", 1.0)
    assert h.verdict(idle(), 5.0, TOPIC, now=1.0).level == WARN


def test_frames_arriving_without_any_outcome_is_an_error_after_the_stuck_limit() -> None:
    h = Health(now=0.0)
    stream(h, 0.0, 2.0, 10, lambda t: h.output(t))
    stream(h, 2.0, 10.0, 10, lambda t: None)                             # nothing comes out any more
    stages = idle(p95_ms=1000.0)                                         # limit max(3 x 1 s, 2 s) = 3 s
    assert h.verdict(stages, 5.0, TOPIC, now=4.9).level == OK
    v = h.verdict(stages, 5.0, TOPIC, now=5.2)
    assert v.level == ERROR and "none was segmented or refused for 3.2 s" in v.message
    assert idle(p95_ms=10.0)[0].stuck_limit_s() == STUCK_MIN_S
    assert Stage("x", True, None, math.nan).stuck_limit_s() == STUCK_MIN_S


def test_a_stage_busy_on_one_frame_too_long_is_stuck() -> None:
    h = Health(now=0.0)
    stages = [Stage("inference", True, 10.0, 200.0)]                     # on one frame since t=10
    assert h.verdict(stages, 0.0, TOPIC, now=11.9).level == OK
    v = h.verdict(stages, 0.0, TOPIC, now=12.5)
    assert v.level == ERROR and "inference thread has been on one frame for 2.5 s" in v.message


def test_a_dead_worker_is_an_error_for_the_hold_time() -> None:
    h = Health(now=0.0)
    h.died("inference", "SystemExit: 3", restarts=1, now=1.0)
    v = h.verdict(idle(), 0.0, TOPIC, now=1.5)
    assert v.level == ERROR and "the inference thread died (SystemExit: 3); restarted it (1 restart so far)" \
        in v.message
    assert h.verdict(idle(), 0.0, TOPIC, now=1.0 + DEATH_HOLD_S + 0.1).level == OK
    assert h.verdict([Stage("inference", False, None, 1.0)], 0.0, TOPIC, now=50.0).level == ERROR


def test_skewed_stamps_warn_with_the_skew_and_its_likely_cause() -> None:
    h = Health(now=0.0)
    stream(h, 0.0, 1.0, 10, lambda t: h.output(t))
    h.stamp_skew(-2.5, now=1.0)
    v = h.verdict(idle(), 5.0, TOPIC, now=1.0)
    assert v.level == WARN and "2.500 s ahead of this node's clock" in v.message and "chrony" in v.message
    assert "segmented anyway" in v.message
    assert h.verdict(idle(), 5.0, TOPIC, now=7.0).level in (OK, WARN)   # out of the window
    assert "ahead" not in h.verdict(idle(), 0.0, TOPIC, now=7.0).message
    h.stamp_skew(3600.0, now=8.0)                                       # an hour-old replay
    v = h.verdict(idle(), 0.0, TOPIC, now=8.0)
    assert v.level == WARN and "3600.000 s behind" in v.message and "--clock" in v.message
