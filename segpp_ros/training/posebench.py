"""What human keypoints cost per frame, by number of persons and merge preset (behind segpp-posebench).

One synthetic street frame, N person boxes (the scene's ground-truth boxes, repeated with a
small jitter to reach N). Each case times the whole PoseEstimator call (crops, forward, decoding,
mapping back): batched (one call with N boxes, one forward) and sequential (N calls with one box
each), for every merge preset. All cases run in the same process on the same weights in
interleaved rounds (the order rotates every round); medians are reported.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..inference.timing import markdown_table, rotated, timed

MODES = ("batched", "sequential")


@dataclass
class PoseRow:
    preset: str
    persons: int
    mode: str
    median_ms: float
    p90_ms: float
    network_ms: float          # median of the summed network time of the call(s)
    speedup: float             # batched: over sequential (same preset); sequential: 1.0
    preset_speedup: float      # over preset 'none' (same persons and mode)


def frame_boxes(seed: int, height: int, width: int, count: int) -> tuple[np.ndarray, list]:
    """The image of scene ``seed`` and ``count`` person boxes: its ground-truth boxes, largest
    first, repeated with a jitter of up to 5 % of the box size (whole-frame box without persons)."""
    from ..inference.pose import PersonBox, whole_frame_box
    from .data.scenes import render_scene

    scene = render_scene(seed, height, width)
    truth = sorted(scene.persons, key=lambda p: -float((p.box[2] - p.box[0]) * (p.box[3] - p.box[1])))
    if not truth:
        return scene.image, [whole_frame_box(height, width)] * count
    rng = np.random.Generator(np.random.PCG64(seed))
    boxes = []
    for i in range(count):
        p = truth[i % len(truth)]
        box = p.box.astype(np.float64)
        if i >= len(truth):
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            box = box + rng.uniform(-0.05, 0.05, 4) * size
        boxes.append(PersonBox(box.astype(np.float32), 1.0, i, 0))
    return scene.image, boxes


def _p90(values: list[float]) -> float:
    return sorted(values)[max(0, math.ceil(0.9 * len(values)) - 1)]


def run(weights: str | None, *, presets: Sequence[str], persons: Sequence[int], frame: tuple[int, int],
        input_size: tuple[int, int] | None = None, device: str = "cpu", precision: str = "fp32",
        flip_test: bool = False, seed: int = 0, warmup: int = 1, iters: int = 5) -> list[PoseRow]:
    """Every (preset, persons, mode) case timed in interleaved rounds on one frame of scene ``seed``."""
    from ..inference.pose import PoseEstimator

    est = PoseEstimator(weights, device=device, precision=precision, input_size=input_size, flip_test=flip_test)
    image, boxes = frame_boxes(seed, *frame, max(persons))

    def call(preset: str, n: int, mode: str) -> float:
        est.set_merge(preset)
        if mode == "batched":
            return est(image, boxes[:n], max_persons=n).network_ms
        return sum(est(image, [b]).network_ms for b in boxes[:n])

    cases = [(p, n, m) for p in presets for n in persons for m in MODES]
    times: dict[tuple, list[float]] = {c: [] for c in cases}
    network: dict[tuple, list[float]] = {c: [] for c in cases}
    for i in range(warmup + iters):
        for case in rotated(cases, i):
            net, ms = timed(lambda case=case: call(*case), est.device)
            if i >= warmup:
                times[case].append(ms)
                network[case].append(net)
    est.set_merge("none")
    med = {c: statistics.median(v) for c, v in times.items()}
    rows = []
    for p, n, m in cases:
        rows.append(PoseRow(p, n, m, round(med[p, n, m], 2), round(_p90(times[p, n, m]), 2),
                            round(statistics.median(network[p, n, m]), 2),
                            round(med[p, n, "sequential"] / med[p, n, m], 3),
                            round(med["none", n, m] / med[p, n, m], 3) if "none" in presets else math.nan))
    return rows


def format_tables(rows: list[PoseRow], reference: str = "none") -> str:
    """Table 1: persons x (batched, sequential, batched speed-up) for the reference preset;
    table 2: presets x persons, batched ms and speed-up over the reference preset."""
    persons = sorted({r.persons for r in rows})
    presets = list(dict.fromkeys(r.preset for r in rows))
    by = {(r.preset, r.persons, r.mode): r for r in rows}
    ref = reference if reference in presets else presets[0]
    t1 = markdown_table(
        (f"persons ({ref})", "batched ms", "sequential ms", "batched speed-up"),
        ([n, f"{by[ref, n, 'batched'].median_ms:.1f}", f"{by[ref, n, 'sequential'].median_ms:.1f}",
          f"{by[ref, n, 'batched'].speedup:.2f}x"] for n in persons))
    header = ["preset (batched)"]
    for n in persons:
        header += [f"{n} person{'s' if n > 1 else ''} ms", f"speed-up vs {ref}"]
    t2 = markdown_table(header, ([p] + [cell for n in persons for cell in
                                        (f"{by[p, n, 'batched'].median_ms:.1f}",
                                         f"{by[ref, n, 'batched'].median_ms / by[p, n, 'batched'].median_ms:.2f}x")]
                                 for p in presets))
    return t1 + "\n\n" + t2
