"""segpp-fidelity: what each merge preset costs in accuracy, and what it buys in speed.

Segmentation: mIoU on held-out generated scenes at each size; pose: PCK@0.1 / PCK@0.05 on
held-out person crops. Every preset runs on the same model, inputs and process, interleaved
(the order rotates per sample), so accuracy and speed-up come from one run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import confusion_matrix, keypoint_boxes, mean_iou, pck
from ..model import PRESETS, SegFormerPP, load_model
from ..model.runtime import keep_freed_memory
from ..timing import markdown_table, rotated, timed
from ..train import HELD_OUT_SEED_BASE
from . import parse_size


@dataclass
class FidelityRow:
    task: str
    size: str
    preset: str
    metric: str
    value: float
    delta: float
    median_ms: float
    speedup: float
    extra: float | None = None       # PCK@0.05 for pose rows


def _finish(rows: list[FidelityRow]) -> list[FidelityRow]:
    base = next((r for r in rows if r.preset == "none"), None)
    for r in rows:
        if base is not None:
            r.delta = round(r.value - base.value, 2)
            r.speedup = round(base.median_ms / r.median_ms, 3)
    return rows


def evaluate_segmentation(model: SegFormerPP, size: tuple[int, int], seeds: list[int], presets: list[str],
                          device: torch.device) -> list[FidelityRow]:
    """mIoU (over classes present in the ground truth) and latency per preset at one size."""
    from ..data.scenes import render_scene
    from ..preprocess import to_tensor

    n = model.num_outputs
    conf = {p: np.zeros((n, n), np.int64) for p in presets}
    times: dict[str, list[float]] = {p: [] for p in presets}
    with torch.inference_mode():
        for i, seed in enumerate(seeds):
            scene = render_scene(seed, *size)
            x = to_tensor(scene.image).to(device, next(model.parameters()).dtype)
            for preset in rotated(presets, i):
                model.set_merge(preset)
                logits, ms = timed(lambda: model(x), device)
                if i > 0:                       # the first sample doubles as warm-up
                    times[preset].append(ms)
                pred = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False).argmax(1)
                conf[preset] += confusion_matrix(pred[0].cpu().numpy(), scene.labels, n)
    model.set_merge("none")
    label = f"{size[0]}x{size[1]}"
    return _finish([FidelityRow("seg", label, p, "mIoU", round(mean_iou(conf[p]), 2), 0.0,
                                round(statistics.median(times[p] or [math.nan]), 1), 1.0) for p in presets])


def evaluate_pose(model: SegFormerPP, seeds: list[int], presets: list[str], batch: int,
                  device: torch.device) -> list[FidelityRow]:
    """PCK@0.1 and PCK@0.05 on held-out crops, and latency of one batch, per preset."""
    from ..data.pose import render_pose_sample
    from ..keypoints import decode_heatmaps
    from ..preprocess import to_tensor

    input_hw = tuple(model.meta.get("input_size", (256, 192)))
    samples = [render_pose_sample(seed, input_hw) for seed in seeds]
    target = np.stack([s.keypoints for s in samples])
    preds = {p: [] for p in presets}
    times: dict[str, list[float]] = {p: [] for p in presets}
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        for i in range(0, len(samples), batch):
            x = to_tensor(np.stack([s.image for s in samples[i:i + batch]])).to(device, dtype)
            for preset in rotated(presets, i // batch):
                model.set_merge(preset)
                heatmaps, ms = timed(lambda: model(x), device)
                if i > 0:
                    times[preset].append(ms)
                preds[preset].append(decode_heatmaps(heatmaps.float().cpu().numpy()))
    model.set_merge("none")
    boxes = keypoint_boxes(target)
    rows = []
    for p in presets:
        pred = np.concatenate(preds[p])
        rows.append(FidelityRow("pose", f"{input_hw[0]}x{input_hw[1]}", p, "PCK@0.1",
                                round(pck(pred, target, boxes, 0.1), 2), 0.0,
                                round(statistics.median(times[p] or [math.nan]), 1), 1.0,
                                round(pck(pred, target, boxes, 0.05), 2)))
    return _finish(rows)


def format_rows(rows: list[FidelityRow]) -> str:
    header = ("task", "size", "preset", "metric", "value", "Δ vs none", "median ms", "speed-up", "PCK@0.05")
    return markdown_table(header, ([r.task, r.size, r.preset, r.metric, f"{r.value:.2f}", f"{r.delta:+.2f}",
                                    f"{r.median_ms:.1f}", f"{r.speedup:.2f}x",
                                    "" if r.extra is None else f"{r.extra:.2f}"] for r in rows))


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
        from ..weights import default_weights
        model = load_model(args.seg_weights or default_weights("seg"), task="seg", device=device)
        for size in [parse_size(s) for s in args.sizes.split(",") if s]:
            seeds = list(range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + args.scenes))
            rows += evaluate_segmentation(model, size, seeds, presets, device)
            print(format_rows(rows), flush=True)
    if "pose" in tasks:
        from ..weights import default_weights
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
