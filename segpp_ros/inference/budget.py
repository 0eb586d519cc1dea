"""A latency budget for token merging: per frame, the most accurate setting predicted to fit (no rclpy).

The node asks, before each frame, which merge preset to run: the most accurate step of a ladder
(from the configured preset down) whose predicted time fits the budget. The prediction, per
network input size, is

    time(step) = cost(step) x load + spread

``cost`` is each step's own time relative to the others, ``load`` how slow the machine is now,
``spread`` how far the recent frames went beyond cost x load (their 90th percentile, in ms: the
budget is for nearly every frame, and jitter is mostly additive). Other work on the machine
(another process on the CPU or the GPU) slows every step by about the same factor, so ``load``
is learned from whatever step is running: the median of time / cost over the last ``window``
frames. When the machine slows down, the spread jumps within one or two frames (then the load
follows) and the controller goes straight to the step that fits, with no walk down the ladder;
when it speeds up again, the load falls once most of the window is fast frames and it goes
straight back up.
A step's ``cost`` is observed each time the controller switches to it (its first frames
against the load measured just before) and is the median of its last few observations: one
taken just as the load changed is outvoted, and a wrong cost is corrected by later switches.
The first frames at a new input size calibrate: three passes down the ladder, one frame per
step each (two in the first: the first frame of a step at a size is not counted, as it
allocates, builds index tables, captures CUDA graphs), so that other work that happens to run
during one frame spoils one observation of a step, not its cost. A step above the chosen one that is predicted not to fit
is still tried once every ``recheck_every`` frames (the cheapest of them), so a cost observed
during a transient cannot rule a step out for good. Switching up needs a prediction within
``1 - margin`` of the budget (switching down needs only an overrun), so noise near the budget
does not make the choice flap.

Costs are not assumed monotone along the ladder: the choice is the most accurate step that
fits, so a step slower than a more accurate one is never chosen over it.

Ladders, most accurate first, from the fidelity study (docs/training.md, mIoU cost against `none` at
512x1024 / 1024x2048): hq -1.10 / -0.59, 2x2 -1.06 / -0.85, fast -2.36 / -1.49, downsample
-8.23 / -0.49. hq and 2x2 cost about the same accuracy, hq the least at the high resolution
where merging matters; downsampling is last (it loses most at camera-like sizes). Pose
(PCK@0.1 on 256 held-out crops): 2x2 -0.02, hq -0.37, fast -0.51; downsampling destroys pose
accuracy (PCK@0.1 5.5), so its ladder stops at fast. On the embedded pose model's 256x192 crops
merging saves little time (0.96-1.05x), so its budget mostly has no faster step to take.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque
from typing import Hashable, Sequence

from ..model.merge import MergeConfig, resolve_merge

SEG_LADDER: tuple[str, ...] = ("none", "hq", "2x2", "fast", "downsample")
POSE_LADDER: tuple[str, ...] = ("none", "2x2", "hq", "fast")
SPREAD_DECILE = 9   # predictions cover the 90th percentile of the recent frames
SWITCH_FRAMES = 3   # a step's cost is observed over its first frames after a switch to it
OBSERVATIONS = 5    # and is the median of its last observations
CALIBRATION_PASSES = 3   # a new size is measured in this many passes down the ladder


class _Size:
    """What the controller knows of one input size."""

    def __init__(self, window: int) -> None:
        self.cost: dict[str, float] = {}               # per step, relative: the median of its observations
        self.observed: dict[str, deque[float]] = {}    # per step, its cost at the last few switches to it
        self.recent: deque[tuple[str, float]] = deque(maxlen=window)   # (step, ms) of the last frames
        self.seen: set[str] = set()
        self.last: str | None = None                   # the step of the last counted frame
        self.since_switch: list[float] = []            # times of the last step since it was switched to
        self.switch_load = 1.0                         # the load just before that switch
        self.chosen: str | None = None
        self.frames = 0

    def load(self, frames: int | None = None) -> float:
        """How slow the machine is now: the median of time / cost over the recent frames (the
        last ``frames`` of them)."""
        recent = list(self.recent)[-frames:] if frames else self.recent
        return statistics.median(ms / self.cost[step] for step, ms in recent) if recent else 1.0

    def spread(self) -> float:
        """What the recent frames took beyond cost x load, in ms: the 90th percentile of
        (time - cost x load). The budget is for nearly every frame, not the median one; the
        spread is in ms because much of the jitter is (threads preempted, the executor's own
        work), not a factor. It is also what reacts first to a slowdown."""
        load = self.load()
        beyond = [ms - self.cost[step] * load for step, ms in self.recent]
        if len(beyond) < 2:
            return max(beyond, default=0.0)
        return statistics.quantiles(beyond, n=10, method="inclusive")[SPREAD_DECILE - 1]

    def predict(self, step: str) -> float | None:
        cost = self.cost.get(step)
        return None if cost is None else cost * self.load() + self.spread()


class BudgetController:
    """Chooses a ladder step per frame and learns the steps' costs and the load from what it is told."""

    def __init__(self, ladder: Sequence[str], window: int = 10, recheck_every: int = 150, margin: float = 0.1,
                 met_window: int = 200) -> None:
        self.ladder = tuple(ladder)
        self._window = window
        self._recheck_every = recheck_every
        self._margin = margin
        self._sizes: dict[Hashable, _Size] = {}
        self._met: deque[bool] = deque(maxlen=met_window)
        self._lock = threading.Lock()

    def steps(self, top: str) -> tuple[str, ...]:
        """The ladder from ``top`` down (top itself alone when it is not on the ladder: 'custom')."""
        return self.ladder[self.ladder.index(top):] if top in self.ladder else (top,)

    def estimate(self, key: Hashable, step: str) -> float | None:
        """The predicted time (ms) of ``step`` at input size ``key`` now; None until measured."""
        with self._lock:
            size = self._sizes.get(key)
            return None if size is None else size.predict(step)

    def choose(self, key: Hashable, budget_ms: float, top: str) -> str:
        """The step to run the next frame of input size ``key`` with."""
        steps = self.steps(top)
        with self._lock:
            size = self._sizes.setdefault(key, _Size(self._window))
            size.frames += 1
            observed = [len(size.observed.get(step, ())) for step in steps]
            if min(observed) < CALIBRATION_PASSES:
                # calibrating: passes down the ladder, one counted frame per step each, so a
                # burst of other work spoils one observation of a step, not its cost
                size.chosen = None
                return steps[observed.index(min(observed))]
            choice = self._fitting(size, steps, budget_ms)
            above = steps[:steps.index(choice)]
            if above and size.frames % self._recheck_every == 0:
                # the most promising step that is predicted not to fit gets one frame
                return min(above, key=lambda step: size.predict(step))
            size.chosen = choice
            return choice

    def record(self, key: Hashable, step: str, ms: float, budget_ms: float) -> None:
        """The measured time of a frame run with ``step``."""
        with self._lock:
            self._met.append(ms <= budget_ms)
            size = self._sizes.setdefault(key, _Size(self._window))
            if step not in size.seen:
                # the first frame of a setting at a size builds its index tables, allocates and,
                # on CUDA, captures its graph: it says nothing about the frames after it
                size.seen.add(step)
                return
            observations = size.observed.setdefault(step, deque(maxlen=OBSERVATIONS))
            if step != size.last:
                # new, or switched to: a new observation of its cost, its first frames against
                # the load of the frame just before (only that one: a switch is mostly made
                # because the load just changed, so the frames before it ran at another load)
                size.since_switch, size.switch_load = [], size.load(1 if size.chosen is not None else None)
                observations.append(0.0)
            if len(size.since_switch) < SWITCH_FRAMES:
                size.since_switch.append(ms)
                observations[-1] = statistics.median(size.since_switch) / size.switch_load
                # one observation taken as the load changed is outvoted by the others
                size.cost[step] = statistics.median(observations)
            size.recent.append((step, ms))
            size.last = step

    def met_share(self) -> float | None:
        """Share of the recent frames that met their budget (None before any)."""
        with self._lock:
            return sum(self._met) / len(self._met) if self._met else None

    def reset(self) -> None:
        with self._lock:
            self._sizes.clear()
            self._met.clear()

    def _fitting(self, size: _Size, steps: Sequence[str], budget_ms: float) -> str:
        """The most accurate step predicted to fit (switching up to it: within the margin), else
        the most accurate one within the margin of the fastest; every step is measured."""
        current = size.chosen if size.chosen in steps else None
        for i, step in enumerate(steps):
            predicted = size.predict(step)
            going_up = current is not None and i < steps.index(current)
            if predicted <= budget_ms * (1 - self._margin if going_up else 1):
                return step
        # nothing fits: the fastest, or a more accurate step within the margin of it (merging
        # that buys no time, as on small pose crops, is not worth its accuracy). Compared by cost
        # alone: the spread is the same for every step and, just after a slowdown, large enough
        # to make them all look alike
        fastest = min(size.cost[step] for step in steps)
        return next(step for step in steps if size.cost[step] <= fastest * (1 + self._margin))


class MergeBudget:
    """The merge configuration to run a frame with: the configured one while the budget is off
    (``budget_ms`` <= 0), else the ladder step the BudgetController chooses, from the configured
    preset down (a 'custom' configuration is never replaced)."""

    def __init__(self, ladder: Sequence[str], **controller: int) -> None:
        self.controller = BudgetController(ladder, **controller)
        self._last_key: Hashable | None = None

    def choose(self, key: Hashable, budget_ms: float, configured: MergeConfig) -> MergeConfig:
        if budget_ms <= 0:
            return configured
        self._last_key = key
        step = self.controller.choose(key, budget_ms, configured.name)
        return configured if step == configured.name else resolve_merge(step)

    def record(self, key: Hashable, merge: MergeConfig, ms: float, budget_ms: float) -> bool:
        """The measured time of a frame run with ``merge``; False when it missed the budget
        (True, and nothing recorded, while the budget is off)."""
        if budget_ms <= 0:
            return True
        self.controller.record(key, merge.name, ms, budget_ms)
        return ms <= budget_ms

    def met_percent(self, budget_ms: float) -> str:
        """Diagnostics value: share of recent frames within the budget, '' while it is off."""
        share = self.controller.met_share()
        return f"{100 * share:.1f}" if budget_ms > 0 and share is not None else ""

    def costs_text(self, budget_ms: float) -> str:
        """Diagnostics value: the predicted ms of each ladder step at the last input size
        ('none 281, hq 255, 2x2 ?, ...'; ? = not measured yet), '' while the budget is off."""
        if budget_ms <= 0 or self._last_key is None:
            return ""
        estimates = ((step, self.controller.estimate(self._last_key, step)) for step in self.controller.ladder)
        return ", ".join(f"{step} {'?' if ms is None else f'{ms:.0f}'}" for step, ms in estimates)
