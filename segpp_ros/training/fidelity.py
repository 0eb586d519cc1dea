"""What each merge preset costs in accuracy and buys in speed (the study behind segpp-fidelity).

Segmentation: mIoU on held-out generated scenes at each size; pose: PCK@0.1 / PCK@0.05 on
held-out person crops. Every preset runs on the same model, inputs and process, interleaved
(the order rotates per sample), so accuracy and speed-up come from one run.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.timing import markdown_table, rotated, timed
from ..model import SegFormerPP
from .metrics import confusion_matrix, keypoint_boxes, mean_iou, pck


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
    from ..inference.preprocess import to_tensor
    from .data.scenes import render_scene

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
    from ..inference.keypoints import decode_heatmaps
    from ..inference.preprocess import to_tensor
    from .data.pose import render_pose_sample

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
