"""segpp-posebench: what human keypoints cost per frame, by number of persons and merge preset.

One synthetic street frame, N person boxes (the scene's ground-truth boxes, repeated with a
small jitter to reach N). Each case times the whole PoseEstimator call (crops, forward, decoding,
mapping back): batched (one call with N boxes, one forward) and sequential (N calls with one box
each), for every merge preset. All cases run in the same process on the same weights in
interleaved rounds (the order rotates every round); medians are reported.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import add_timing_args, parse_preset_args, parse_size, preset_error
from ..model import PRESETS
from ..timing import markdown_table, rotated, timed

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
    from ..data.scenes import render_scene
    from ..pose import PersonBox, whole_frame_box

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


def run(args: argparse.Namespace) -> list[PoseRow]:
    from ..pose import PoseEstimator

    est = PoseEstimator(args.weights, device=args.device, precision=args.precision,
                        input_size=args.input_size, flip_test=args.flip_test)
    image, boxes = frame_boxes(args.seed, *args.frame, max(args.persons))

    def call(preset: str, n: int, mode: str) -> float:
        est.set_merge(preset)
        if mode == "batched":
            return est(image, boxes[:n], max_persons=n).network_ms
        return sum(est(image, [b]).network_ms for b in boxes[:n])

    cases = [(p, n, m) for p in args.presets for n in args.persons for m in MODES]
    times: dict[tuple, list[float]] = {c: [] for c in cases}
    network: dict[tuple, list[float]] = {c: [] for c in cases}
    for i in range(args.warmup + args.iters):
        for case in rotated(cases, i):
            net, ms = timed(lambda case=case: call(*case), est.device)
            if i >= args.warmup:
                times[case].append(ms)
                network[case].append(net)
    est.set_merge("none")
    med = {c: statistics.median(v) for c, v in times.items()}
    rows = []
    for p, n, m in cases:
        rows.append(PoseRow(p, n, m, round(med[p, n, m], 2), round(_p90(times[p, n, m]), 2),
                            round(statistics.median(network[p, n, m]), 2),
                            round(med[p, n, "sequential"] / med[p, n, m], 3),
                            round(med["none", n, m] / med[p, n, m], 3) if "none" in args.presets else math.nan))
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


def _counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--persons takes comma-separated counts, e.g. 1,4,8, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--persons counts must be >= 1, got {text!r}")
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-posebench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="pose checkpoint (default: the embedded B0 pose model)")
    p.add_argument("--input-size", type=parse_size, default=(384, 288), help="pose crop size HEIGHTxWIDTH")
    p.add_argument("--frame", type=parse_size, default=(720, 1280), help="synthetic frame size HEIGHTxWIDTH")
    p.add_argument("--persons", type=_counts, default=[1, 4, 8], help="comma-separated person counts")
    p.add_argument("--presets", default="none,hq,fast,2x2,downsample",
                   help=f"comma-separated merge presets; 'none' is the reference ({', '.join(PRESETS)})")
    p.add_argument("--flip-test", action="store_true", help="time with flip test (doubles the crops)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", help="fp32, fp16 or bf16")
    add_timing_args(p, warmup=1, iters=5, threads=2, rounds_of="cases")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_preset_args(build_parser(), argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    error = preset_error("segpp-posebench", args.presets)
    if error:
        print(error, file=sys.stderr)
        return 2
    if args.iters < 1 or args.warmup < 0:
        print("segpp-posebench: --iters must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run(args)
    except (ValueError, RuntimeError) as err:         # CheckpointError is a RuntimeError
        print(f"segpp-posebench: {err}", file=sys.stderr)
        return 2
    print(format_tables(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
               "threads": torch.get_num_threads(), "device": args.device, "precision": args.precision,
               "input_size": list(args.input_size), "frame": list(args.frame), "flip_test": args.flip_test,
               "argv": sys.argv[1:] if argv is None else argv}
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
