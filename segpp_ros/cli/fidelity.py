"""segpp-fidelity: what each merge preset costs in accuracy, and what it buys in speed.

Segmentation: mIoU on held-out generated scenes at each size; pose: PCK@0.1 / PCK@0.05 on
held-out person crops. Every preset runs on the same model, inputs and process, interleaved
(the order rotates per sample), so accuracy and speed-up come from one run
(segpp_ros.training.fidelity).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import torch

from ..model import PRESETS, load_model
from ..model.runtime import keep_freed_memory
from ..training.fidelity import FidelityRow, evaluate_pose, evaluate_segmentation, format_rows
from ..training.train import HELD_OUT_SEED_BASE
from ..weights import default_weights
from . import parse_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-fidelity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seg-weights", help="segmentation checkpoint (default: the embedded model)")
    p.add_argument("--pose-weights", help="pose checkpoint (default: the embedded model)")
    p.add_argument("--tasks", default="seg,pose", help="comma-separated: seg, pose")
    p.add_argument("--sizes", default="512x1024,1024x2048", help="segmentation input sizes HEIGHTxWIDTH")
    p.add_argument("--scenes", type=int, default=20, help="held-out scenes per size")
    p.add_argument("--pose-samples", type=int, default=256, help="held-out person crops")
    p.add_argument("--pose-batch", type=int, default=8)
    p.add_argument("--presets", default="none,hq,fast,2x2,downsample")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    if any(p not in PRESETS for p in presets):
        print(f"segpp-fidelity: --presets takes {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    device = torch.device(args.device)
    tasks = [t for t in args.tasks.split(",") if t]
    rows: list[FidelityRow] = []
    if "seg" in tasks:
        model = load_model(args.seg_weights or default_weights("seg"), task="seg", device=device)
        for size in [parse_size(s) for s in args.sizes.split(",") if s]:
            seeds = list(range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + args.scenes))
            rows += evaluate_segmentation(model, size, seeds, presets, device)
            print(format_rows(rows), flush=True)
    if "pose" in tasks:
        model = load_model(args.pose_weights or default_weights("pose"), task="pose", device=device)
        seeds = list(range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + args.pose_samples))
        rows += evaluate_pose(model, seeds, presets, args.pose_batch, device)
    print()
    print(format_rows(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__,
                       "rows": [asdict(r) for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
