"""What a camera frame costs the Segmenter beyond its network pass (segpp-framebench).

Per (frame size, max_side, threads) both frame paths run on the same frame (a camera picture
resized to the size; segpp-framebench takes a bundled sample), interleaved (the order rotates
every round), the embedded MiT-B0: ``fast`` (uint8 resize, the label kernel) and
``classic`` (the float resize, every class map resized). Each call's own split (Segmentation's
pre / network / post / colour) is recorded, medians reported, and total / network is the
figure the issue's target is about. Colours and the overlay are timed in calls that make both
(what a node pays when ~/color and ~/overlay are subscribed), the rest in calls without them.

A second table times the label step alone for 19 and 150 classes (ADE20K's count) at one
frame size: the 150-class logits are the embedded model's 19 classes and 131 more, each a copy
of one of them lowered by 1 to 6 (classes that are plausible nearby but rarely win, as in a
150-class scene), so the cells where classes meet are the real frame's.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..inference import Segmenter
from ..inference.label_kernel import cell_labels
from ..inference.labels import upsampled_argmax
from ..inference.segmenter import network_size
from ..inference.timing import markdown_table, rotated, timed

PATHS = ("fast", "classic")


@dataclass
class SplitRow:
    size: str
    max_side: int
    network: str
    threads: int
    path: str
    pre_ms: float
    network_ms: float
    post_ms: float
    colour_ms: float
    total_ms: float
    ratio: float          # total / network


@dataclass
class ClassesRow:
    size: str
    classes: int
    path: str
    post_ms: float


def camera_frame(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """``picture`` (RGB uint8) at the camera size."""
    import cv2

    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_LINEAR)


def split(picture: np.ndarray, sizes: Sequence[tuple[int, int]], max_sides: Sequence[int], threads: Sequence[int],
          warmup: int = 2, iters: int = 9) -> list[SplitRow]:
    segmenters = {path: Segmenter(None, device="cpu", frame_path=path) for path in PATHS}
    rows = []
    saved = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            for size in sizes:
                image = camera_frame(picture, *size)
                for max_side in max_sides:
                    for seg in segmenters.values():
                        seg.max_side = max_side
                    plain = {p: [] for p in PATHS}
                    coloured = {p: [] for p in PATHS}
                    for i in range(warmup + iters):
                        for path in rotated(PATHS, i):
                            seg = segmenters[path]
                            a, b = seg(image), seg(image, color=True, overlay_alpha=0.5)
                            if i >= warmup:
                                plain[path].append(a)
                                coloured[path].append(b)
                    for path in PATHS:
                        med = {k: statistics.median(getattr(r, k) for r in plain[path])
                               for k in ("pre_ms", "network_ms", "post_ms", "total_ms")}
                        colour = statistics.median(r.colour_ms for r in coloured[path])
                        rows.append(SplitRow(f"{size[0]}x{size[1]}", max_side,
                                             "x".join(map(str, network_size(*size, max_side))), n, path,
                                             round(med["pre_ms"], 2), round(med["network_ms"], 2),
                                             round(med["post_ms"], 2), round(colour, 2), round(med["total_ms"], 2),
                                             round(med["total_ms"] / med["network_ms"], 2)))
    finally:
        torch.set_num_threads(saved)
    return rows


def with_more_classes(logits: torch.Tensor, classes: int, seed: int = 0) -> torch.Tensor:
    """[1, C, h, w] -> [1, classes, h, w]: the C real ones, then copies of random real classes
    lowered by 1..6 (see the module docstring)."""
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, logits.shape[1], classes - logits.shape[1])
    shift = torch.as_tensor(rng.uniform(1.0, 6.0, len(extra)), dtype=logits.dtype).view(1, -1, 1, 1)
    return torch.cat([logits, logits[:, torch.as_tensor(extra)] - shift], dim=1).contiguous()


def classes_cost(picture: np.ndarray, size: tuple[int, int], max_side: int, counts: Sequence[int] = (19, 150),
                 threads: int = 1, iters: int = 9) -> list[ClassesRow]:
    """The label step alone at ``size`` for each class count, both paths, from the embedded model's
    logits of a real frame (extended as ``with_more_classes``)."""
    seg = Segmenter(None, device="cpu", max_side=max_side)
    image = camera_frame(picture, *size)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            x = seg._network_input(torch.from_numpy(image)[None], network_size(*size, max_side))
            base = seg.forward(x)
        rows = []
        for count in counts:
            logits = with_more_classes(base, count) if count > base.shape[1] else base
            array = logits[0].numpy()
            calls = {"fast": lambda: cell_labels(array, size), "classic": lambda: upsampled_argmax(logits, size)}
            times = {p: [] for p in PATHS}
            for i in range(iters + 1):
                for path in rotated(PATHS, i):
                    ms = timed(calls[path], seg.device)[1]
                    if i:
                        times[path].append(ms)
            rows += [ClassesRow(f"{size[0]}x{size[1]}", count, p, round(statistics.median(times[p]), 2)) for p in PATHS]
        return rows
    finally:
        torch.set_num_threads(saved)


def format_split(rows: Sequence[SplitRow]) -> str:
    return markdown_table(["frame", "max_side", "network input", "threads", "path", "pre ms", "network ms", "post ms",
                           "colour + overlay ms", "total ms", "total / network"],
                          [[r.size, str(r.max_side), r.network, str(r.threads), r.path, f"{r.pre_ms:.1f}",
                            f"{r.network_ms:.1f}", f"{r.post_ms:.1f}", f"{r.colour_ms:.1f}", f"{r.total_ms:.1f}",
                            f"{r.ratio:.2f}"] for r in rows])


def format_classes(rows: Sequence[ClassesRow]) -> str:
    return markdown_table(["frame", "classes", "path", "labels ms"],
                          [[r.size, str(r.classes), r.path, f"{r.post_ms:.1f}"] for r in rows])
