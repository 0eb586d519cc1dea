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

import torch

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
    return ours.to(device, dtype), hf.to(device, dtype)


def run_case(model: SegFormerPP, hf: torch.nn.Module | None, variant: str, size: tuple[int, int],
             precision: str, device: torch.device, *, presets: Sequence[str], batch: int = 1, warmup: int = 2,
             iters: int = 10, memory: bool = True) -> list[Row]:
    """Every preset (and HF's model when given) on one batch of ``size``, interleaved; speed-up and
    argmax agreement against 'none' of the same run."""
    dtype = DTYPES[precision]
    x = synthetic_batch(batch, *size).to(device, dtype)
    calls: dict[str, Callable[[], torch.Tensor]] = {}
    for name in presets:
        calls[name] = (lambda n=name: (model.set_merge(n), model(x))[1])
    if hf is not None:
        calls[HF_ROW] = lambda: hf(pixel_values=x).logits

    with torch.inference_mode():
        reference = calls["none"]().float().argmax(1) if "none" in calls else None
        agreement, peaks = {}, {}
        for name, call in calls.items():
            out = call()
            agreement[name] = (out.float().argmax(1) == reference).float().mean().item() if reference is not None \
                else math.nan
            peaks[name] = peak_memory_mb(call, device) if memory else None
        for _ in range(warmup):
            for call in calls.values():
                call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for i in range(iters):
            for name in rotated(names, i):
                times[name].append(timed(calls[name], device)[1])
    base = statistics.median(times["none"]) if "none" in times else math.nan
    rows = []
    for name in names:
        med = statistics.median(times[name])
        p90 = sorted(times[name])[max(0, math.ceil(0.9 * len(times[name])) - 1)]
        rows.append(Row(variant, f"{size[0]}x{size[1]}", str(device), precision, batch, name,
                        round(med, 2), round(p90, 2), round(base / med, 3), peaks[name] and round(peaks[name], 1),
                        round(agreement[name], 5)))
    return rows


def format_table(rows: list[Row]) -> str:
    header = ("variant", "size", "device", "prec", "batch", "strategy", "median ms", "p90 ms",
              "speed-up", "peak MB", "argmax agree")
    return markdown_table(header, ([r.variant, r.size, r.device, r.precision, r.batch, r.strategy,
                                    f"{r.median_ms:.1f}", f"{r.p90_ms:.1f}", f"{r.speedup:.2f}x",
                                    "n/a" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                                    f"{100 * r.agreement:.2f}%"] for r in rows))
