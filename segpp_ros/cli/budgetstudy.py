"""segpp-budget-study: the latency budget on a machine whose load changes, through the real node.

    tools/netns-run segpp-budget-study --json benchmarks/budget-cpu.json --plot docs/budget-cpu.png

The node runs with merge.budget_ms set while this process publishes held-out scenes at a fixed
rate and switches a CPU load on and off (segpp_ros.harness.budget_study). Prints per phase the
share of frames within the budget, the presets chosen and the latency, then the mIoU of the
budget's choices against each fixed preset on the same labels (segpp_ros.training.budget_eval).
A benchmark, not a test. DDS must stay on this host: run it inside tools/netns-run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ..ros.env import is_isolated_network
from . import non_negative_int, parse_size, positive_float

PROG = "segpp-budget-study"
HELD_OUT_SEED = 10_000_000   # the fidelity study's held-out scenes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=positive_float, default=250.0, help="merge.budget_ms (default: 250)")
    p.add_argument("--preset", default="none", help="merge.preset, the top of the ladder (default: none)")
    p.add_argument("--rate", type=positive_float, default=3.0, help="camera frames per second (default: 3)")
    p.add_argument("--phase", type=positive_float, default=40.0, help="seconds per phase (default: 40)")
    p.add_argument("--phases", type=int, default=5, help="phases, alternating idle / loaded (default: 5)")
    p.add_argument("--load-procs", type=non_negative_int, default=1,
                   help="processes spinning on the CPU in loaded phases (default: 1)")
    p.add_argument("--threads", type=non_negative_int, default=2, help="node parameter threads (default: 2)")
    p.add_argument("--scenes", type=int, default=10, help="held-out scenes, published in turn (default: 10)")
    p.add_argument("--size", type=parse_size, default=(512, 1024), help="scene size HxW (default: 512x1024)")
    p.add_argument("--json", help="write settings, phases, labels and scores to this JSON file")
    p.add_argument("--plot", help="write the latency / preset time plot to this PNG file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not is_isolated_network():
        print(f"{PROG}: this starts DDS, which must not reach other hosts: run it inside an isolated network "
              f"namespace via `tools/netns-run {PROG} ...`", file=sys.stderr)
        return 2
    import torch

    from ..inference.budget import SEG_LADDER
    from ..inference.timing import markdown_table
    from ..harness import budget_study as study
    from ..training.budget_eval import PresetReferences
    from ..training.data.scenes import render_scene

    if args.preset not in SEG_LADDER:
        build_parser().error(f"--preset must be one of {', '.join(SEG_LADDER)}")
    settings = study.Settings(budget_ms=args.budget, rate_hz=args.rate, phase_s=args.phase, phases=args.phases,
                              load_procs=args.load_procs, threads=args.threads, max_side=max(args.size),
                              preset=args.preset)
    ladder = list(SEG_LADDER[SEG_LADDER.index(args.preset):])
    scenes = [render_scene(HELD_OUT_SEED + i, *args.size) for i in range(args.scenes)]
    if args.threads:
        torch.set_num_threads(args.threads)   # the node's thread count: the same arithmetic
    print(f"reference labels of {len(scenes)} scenes x {len(ladder)} presets ...", flush=True)
    refs = PresetReferences(scenes, ladder, settings.max_side)
    try:
        labels, phases, _ = study.run(
            [s.image for s in scenes], settings, Path(tempfile.mkdtemp(prefix="segpp-budget-")),
            lambda scene, pixels, phase: refs.identify(scene, pixels, "loaded" if phase % 2 else "idle"),
            progress=lambda line: print(line, flush=True))
    except RuntimeError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    print()
    print(study.format_phases(phases, settings))
    rows, scores = [], {}
    for group in ("idle", "loaded", None):
        if group and group not in refs.score.chosen:
            continue
        chosen, fixed = refs.score.miou(group)
        scores[group or "all"] = {"budget": round(chosen, 2), **{p: round(v, 2) for p, v in fixed.items()}}
        rows.append([group or "all", f"{chosen:.2f}", *(f"{fixed[p]:.2f}" for p in ladder)])
    print()
    print(markdown_table(["phases", "budget mode mIoU", *(f"fixed {p}" for p in ladder)], rows))
    unknown = sum(label.preset == "?" for label in labels)
    agreement = min(refs.agreement) if refs.agreement else float("nan")
    print(f"\nlabels identified: {len(labels) - unknown} of {len(labels)} (lowest pixel agreement with the "
          f"reference of their preset: {100 * agreement:.3f}%)")
    if args.plot:
        study.plot(labels, phases, settings, ladder, Path(args.plot))
        print(f"wrote {args.plot}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(study.record(labels, phases, settings, {"miou": scores, "min_agreement": agreement}), f,
                      indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
