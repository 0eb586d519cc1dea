"""The node's watchdog: from what happened to the frames and the worker threads, the level and
message of its /diagnostics status (no rclpy: the node feeds it, the tests drive it with a clock).

Every frame the worker takes ends in an output (labels published) or a problem (dropped as
stale, bad input, failed); frames replaced in the keep-latest slot are the policy under a
camera faster than the model and are not problems. The verdict, most severe first:

- ERROR: a stage has been on one item for longer than its stuck limit (max(3 x its p95
  latency, 2 s)); a worker thread died (held for DEATH_HOLD_S after the death, so every
  watcher sees it; the node restarts the thread); or frames keep arriving but none has ended
  in an output or a problem for the stuck limit of the first stage.
- WARN: more than half of the frames processed in the window gave no labels (the message
  names the most frequent problem and its last text, which says how to fix it); header stamps
  far from the node's clock (the skew and its likely cause; the frames are still segmented);
  no image for ``no_image_warning`` seconds.
- OK otherwise.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from .realtime import EventLog, RateMeter

OK, WARN, ERROR = 0, 1, 2                 # DiagnosticStatus levels
STUCK_MIN_S = 2.0                         # a stage is stuck after max(3 x its p95 latency, this)
DEATH_HOLD_S = 10.0                       # a worker's death stays an ERROR this long


def stamp_text(skew_s: float) -> str:
    """'12.500 s behind' / '3.000 s ahead of' (skew: node clock minus stamp)."""
    return f"{abs(skew_s):.3f} s {'behind' if skew_s > 0 else 'ahead of'}"


def skew_cause(skew_s: float) -> str:
    """The likely cause of stamps ``skew_s`` behind (> 0) or ahead (< 0) of the node's clock."""
    if skew_s < 0:
        return ("the camera's clock runs ahead of this host's: synchronise the clocks (chrony, PTP), or check that "
                "use_sim_time is the same for the camera and this node")
    return ("a recording replayed without --clock (ros2 bag play --clock with use_sim_time:=true keeps the stamps "
            "current), a camera whose clock is not synchronised with this host's (chrony, PTP), or sim time on "
            "one side only")


@dataclass(frozen=True)
class Stage:
    """What the watchdog reads of one worker thread."""

    name: str                             # e.g. "inference", "keypoints"
    alive: bool
    busy_since: float | None              # monotonic start of the current item, None when idle
    p95_ms: float                         # recent p95 time of one item (NaN when unknown)

    def stuck_limit_s(self) -> float:
        p95 = self.p95_ms / 1000.0
        return max(3.0 * p95, STUCK_MIN_S) if p95 == p95 else STUCK_MIN_S


@dataclass(frozen=True)
class Verdict:
    level: int
    message: str


class Health:
    """Collects inputs, outputs, problems, clock skew and worker deaths; judges them on demand.
    Thread-safe for the calls the node makes from its callbacks and workers."""

    def __init__(self, window_s: float = 5.0, now: float | None = None) -> None:
        self.window_s = window_s
        self.started = time.monotonic() if now is None else now
        self.inputs = RateMeter(window_s)
        self.outputs = RateMeter(window_s)
        self.problems = EventLog(window_s)
        self.skew = EventLog(window_s)
        self.deaths: deque[tuple[float, str, str]] = deque(maxlen=16)
        self.last_skew = 0.0
        self._unaccounted_since: float | None = None

    # -- what happened --------------------------------------------------------------------------
    def input(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.inputs.tick(now)
        if self._unaccounted_since is None:
            self._unaccounted_since = now

    def output(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.outputs.tick(now)
        self._unaccounted_since = None

    def problem(self, kind: str, text: str, now: float | None = None) -> None:
        """A frame that ended without labels: kind is its counter key (e.g. bad_input_encoding)."""
        now = time.monotonic() if now is None else now
        self.problems.add(kind, text, now=now)
        self._unaccounted_since = None

    def stamp_skew(self, skew_s: float, now: float | None = None) -> None:
        """A header stamp ``skew_s`` behind (> 0) or ahead of (< 0) the node's clock."""
        self.skew.add("skew", value=abs(skew_s), now=now)
        self.last_skew = skew_s

    def died(self, stage: str, reason: str, restarts: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.deaths.append((now, stage, f"the {stage} thread died ({reason}); restarted it "
                                        f"({restarts} restart{'s' if restarts != 1 else ''} so far)"))

    # -- the verdict ----------------------------------------------------------------------------
    def verdict(self, stages: list[Stage], no_image_warning: float, input_topic: str,
                now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        for stage in stages:
            if not stage.alive:
                return Verdict(ERROR, f"the {stage.name} thread is not running; restart the node")
            if stage.busy_since is not None and now - stage.busy_since > stage.stuck_limit_s():
                return Verdict(ERROR, f"the {stage.name} thread has been on one frame for "
                                      f"{now - stage.busy_since:.1f} s (limit {stage.stuck_limit_s():.1f} s): it is "
                                      "stuck; restart the node (launch respawns it when it exits)")
        for when, _, text in reversed(self.deaths):    # a thread that died and was restarted
            if now - when <= DEATH_HOLD_S:
                return Verdict(ERROR, f"{text}; if this repeats, report it with the node's log")
        main = stages[0] if stages else None
        limit = main.stuck_limit_s() if main is not None else STUCK_MIN_S
        pending = self._unaccounted_since
        if pending is not None and now - pending > limit:
            return Verdict(ERROR, f"frames arrive on {input_topic} ({self.inputs.count(now)} in the last "
                                  f"{self.window_s:g} s) but none was segmented or refused for {now - pending:.1f} s: "
                                  "inference is stuck; restart the node (launch respawns it when it exits)")
        counts = self.problems.counts(now)
        failed = sum(counts.values())
        processed = failed + self.outputs.count(now)
        if failed and failed * 2 > processed:
            kind, n = counts.most_common(1)[0]
            return Verdict(WARN, f"{failed} of the {processed} frames processed in the last {self.window_s:g} s gave no "
                                 f"labels, most as {kind} ({n}): {self.problems.latest.get(kind, '')}")
        if self.skew.largest(now) > 0:
            skew = self.last_skew
            return Verdict(WARN, f"header stamps on {input_topic} are {stamp_text(skew)} this node's clock: "
                                 f"{skew_cause(skew)}. The frames are segmented anyway")
        last = self.inputs.last if self.inputs.last is not None else self.started
        if no_image_warning > 0 and now - last > no_image_warning:
            return Verdict(WARN, f"no image on {input_topic} for {now - last:.0f} s")
        return Verdict(OK, "segmenting")
