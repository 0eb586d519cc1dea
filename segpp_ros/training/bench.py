"""Speed of the merge presets on the same weights (the measurement behind segpp-bench).

All presets of one (variant, size, precision) run in the same process on the same weights,
interleaved (the order rotates every round), so drift of the machine hits every row alike;
optionally beside HF transformers' SegFormer loaded from the very same saved weights.
"""
from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..inference.graphs import GraphedForward
from ..inference.labels import upsampled_argmax
from ..inference.preprocess import PinnedUploads, normalise, upload
from ..inference.timing import markdown_table, peak_memory_mb, rotated, timed
from ..model import SegFormerPP

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
HF_ROW = "hf-transformers"


@dataclass
class Row:
    variant: str
    size: str
    device: str
    precision: str
    batch: int
    strategy: str
    median_ms: float
    p90_ms: float
    speedup: float
    peak_mb: float | None
    agreement: float
    e2e_ms: float | None = None   # uint8 images in, labels on the host out (pre + forward + post)
    graphs: bool = False          # the forward pass replayed as CUDA graphs


def synthetic_batch(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A deterministic, image-like (smooth, structured) normalised input [B, 3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h)[:, None]
    xx = torch.linspace(0, 1, w)[None, :]
    images = []
    for _ in range(batch):
        f = torch.rand(3, 4, generator=g) * 12 + 1
        img = torch.stack([torch.sin(f[c, 0] * xx + f[c, 1] * yy) + torch.cos(f[c, 2] * xx * yy + f[c, 3])
                           for c in range(3)])
        blocks = (torch.rand(3, 8, 8, generator=g) * 2 - 1)
        img = img + torch.nn.functional.interpolate(blocks[None], size=(h, w), mode="nearest")[0]
        images.append(img)
    return torch.stack(images)


def hf_pair(variant: str, num_classes: int, device: torch.device, dtype: torch.dtype
            ) -> tuple[SegFormerPP, torch.nn.Module]:
    """HF transformers' SegFormer and our model loaded from the very same saved weights."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from ..model import load_model
    from ..model.spec import get_spec, hf_head_channels

    spec = get_spec(variant)
    config = SegformerConfig(
        num_labels=num_classes, hidden_sizes=list(spec.widths), depths=list(spec.depths),
        num_attention_heads=list(spec.heads), sr_ratios=list(spec.sr_ratios),
        decoder_hidden_size=hf_head_channels(spec))
    hf = SegformerForSemanticSegmentation(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_model(tmp)
    return ours.fold_for_inference().to(device, dtype), hf.to(device, dtype)


def end_to_end(forward: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device,
               dtype: torch.dtype, uploads: PinnedUploads) -> list[np.ndarray]:
    """What the Segmenter does around the network for images already at the network size: uint8
    upload, normalisation, forward, upsampling with the argmax, the copy of the labels."""
    x = normalise(upload(images, device, uploads), dtype)
    logits = forward(x)
    return [upsampled_argmax(logits[i:i + 1], tuple(images.shape[1:3])).to(torch.uint8).cpu().numpy()
            for i in range(len(images))]


def run_case(model: SegFormerPP, hf: torch.nn.Module | None, variant: str, size: tuple[int, int],
             precision: str, device: torch.device, *, presets: Sequence[str], batch: int = 1, warmup: int = 2,
             iters: int = 10, memory: bool = True, e2e: bool = False, graphs: bool = False) -> list[Row]:
    """Every preset (and HF's model when given) on one batch of ``size``, interleaved; speed-up and
    argmax agreement against 'none' of the same run. ``e2e`` also times the whole image-to-labels
    path per preset; ``graphs`` replays the forward pass as CUDA graphs (on CUDA)."""
    dtype = DTYPES[precision]
    x = synthetic_batch(batch, *size).to(device, dtype)
    forward = GraphedForward(model, key=lambda: model.merge, enabled=graphs)
    calls: dict[str, Callable[[], torch.Tensor]] = {}
    for name in presets:
        calls[name] = (lambda n=name: (model.set_merge(n), forward(x))[1])
    if hf is not None:
        calls[HF_ROW] = lambda: hf(pixel_values=x).logits
    images = (np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8) if e2e else None)
    uploads = PinnedUploads()
    pipelines = {name: (lambda n=name: (model.set_merge(n), end_to_end(forward, images, device, dtype, uploads))[1])
                 for name in presets} if e2e else {}

    with torch.inference_mode():
        reference = calls["none"]().float().argmax(1) if "none" in calls else None
        agreement, peaks = {}, {}
        for name, call in calls.items():
            out = call()
            agreement[name] = (out.float().argmax(1) == reference).float().mean().item() if reference is not None \
                else math.nan
            peaks[name] = peak_memory_mb(call, device) if memory else None
        for _ in range(warmup):
            for call in (*calls.values(), *pipelines.values()):
                call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        e2e_times: dict[str, list[float]] = {name: [] for name in pipelines}
        names = list(calls)
        for i in range(iters):
            for name in rotated(names, i):
                times[name].append(timed(calls[name], device)[1])
                if name in pipelines:
                    e2e_times[name].append(timed(pipelines[name], device)[1])
    base = statistics.median(times["none"]) if "none" in times else math.nan
    rows = []
    for name in names:
        med = statistics.median(times[name])
        p90 = sorted(times[name])[max(0, math.ceil(0.9 * len(times[name])) - 1)]
        rows.append(Row(variant, f"{size[0]}x{size[1]}", str(device), precision, batch, name,
                        round(med, 2), round(p90, 2), round(base / med, 3), peaks[name] and round(peaks[name], 1),
                        round(agreement[name], 5),
                        round(statistics.median(e2e_times[name]), 2) if name in e2e_times else None,
                        graphs and device.type == "cuda" and name != HF_ROW))
    model.set_merge("none")
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows as Markdown; the end-to-end and CUDA-graph columns only when some row has them."""
    e2e = any(r.e2e_ms is not None for r in rows)
    graphs = any(r.graphs for r in rows)
    header = ("variant", "size", "device", "prec", "batch", "strategy", *(("graphs",) if graphs else ()),
              "median ms", "p90 ms", "speed-up", "peak MB", "argmax agree", *(("e2e ms",) if e2e else ()))
    return markdown_table(header, ([r.variant, r.size, r.device, r.precision, r.batch, r.strategy,
                                    *(("yes" if r.graphs else "no",) if graphs else ()),
                                    f"{r.median_ms:.1f}", f"{r.p90_ms:.1f}", f"{r.speedup:.2f}x",
                                    "n/a" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                                    f"{100 * r.agreement:.2f}%",
                                    *(("n/a" if r.e2e_ms is None else f"{r.e2e_ms:.1f}",) if e2e else ())]
                                   for r in rows))
