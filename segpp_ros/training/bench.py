"""Speed of the merge presets on the same weights (the measurement behind segpp-bench).

All presets of one (variant, size, precision) run in the same process on the same weights,
interleaved (the order rotates every round), so drift of the machine hits every row alike;
optionally beside HF transformers' SegFormer loaded from the very same saved weights.
"""
from __future__ import annotations

import copy
import math
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..inference.graphs import capture_between_frames
from ..inference.labels import upsampled_argmax
from ..inference.loader import model_forward
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
    backend: str = "torch"        # torch (eager), openvino (the compiled graph) or inductor (torch.compile)
    logit_diff: float | None = None   # max |logit - torch's logit| of the same preset (openvino rows)


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


def backend_forwards(model: SegFormerPP, backends: Sequence[str], precision: str,
                     graphs: bool) -> dict[str, tuple[SegFormerPP, Callable[[torch.Tensor], torch.Tensor]]]:
    """Per backend the model it runs and its forward pass (the inference wrappers' own):
    torch eager (CUDA graphs with ``graphs``), openvino compiled from a float32 copy at
    ``precision`` (fp32 or bf16) with the threads PyTorch uses."""
    out: dict[str, tuple[SegFormerPP, Callable[[torch.Tensor], torch.Tensor]]] = {}
    for backend in backends:
        m = model
        if backend == "openvino" and next(model.parameters()).dtype != torch.float32:
            m = copy.deepcopy(model).float()
        out[backend] = (m, model_forward(m, backend, precision, cuda_graphs=graphs, background_compile=False))
    return out


def run_case(model: SegFormerPP, hf: torch.nn.Module | None, variant: str, size: tuple[int, int],
             precision: str, device: torch.device, *, presets: Sequence[str], batch: int = 1, warmup: int = 2,
             iters: int = 10, memory: bool = True, e2e: bool = False, graphs: bool = False,
             backends: Sequence[str] = ("torch",)) -> list[Row]:
    """Every preset (and HF's model when given) on one batch of ``size``, per backend, all
    interleaved; speed-up and argmax agreement against torch's 'none' of the same run (the first
    backend's 'none' when torch is not among them). ``e2e`` also times the whole image-to-labels
    path per preset; ``graphs`` replays the torch forward pass as CUDA graphs (on CUDA). A
    compiled backend is compiled before the first timed round (its compile times: its log)."""
    dtype = DTYPES[precision]
    x = synthetic_batch(batch, *size).to(device, dtype)
    forwards = backend_forwards(model, backends, precision, graphs)
    calls: dict[tuple[str, str], Callable[[], torch.Tensor]] = {}
    for backend, (m, forward) in forwards.items():
        for name in presets:
            calls[backend, name] = (lambda m=m, f=forward, n=name: (m.set_merge(n), f(x.to(next(m.parameters()).dtype)))[1])
    if hf is not None:
        calls["torch", HF_ROW] = lambda: hf(pixel_values=x).logits
    images = (np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8) if e2e else None)
    uploads = PinnedUploads()
    pipelines = {(backend, name): (lambda m=m, f=forward, n=name: (m.set_merge(n), end_to_end(
                     f, images, device, next(m.parameters()).dtype, uploads))[1])
                 for backend, (m, forward) in forwards.items() for name in presets} if e2e else {}

    with torch.inference_mode():
        first = ("torch" if "torch" in forwards else next(iter(forwards)), "none")
        reference = calls[first]().float() if first in calls else None
        outputs = {key: call().float() for key, call in calls.items()}
        agreement = {key: (out.argmax(1) == reference.argmax(1)).float().mean().item() if reference is not None
                     else math.nan for key, out in outputs.items()}
        diff = {key: float((out - outputs["torch", key[1]]).abs().max())
                for key, out in outputs.items() if key[0] != "torch" and ("torch", key[1]) in outputs}
        # the profiler sees PyTorch's allocations only
        peaks = {key: peak_memory_mb(call, device) if memory and key[0] == "torch" else None
                 for key, call in calls.items()}
        for _ in range(warmup):
            for key, call in (*calls.items(), *pipelines.items()):
                call()
                if key[1] != HF_ROW:       # a new CUDA graph key is captured between calls, as between frames
                    capture_between_frames(forwards[key[0]][1])
        times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        e2e_times: dict[tuple[str, str], list[float]] = {key: [] for key in pipelines}
        keys = list(calls)
        for i in range(iters):
            for key in rotated(keys, i):
                times[key].append(timed(calls[key], device)[1])
                if key in pipelines:
                    e2e_times[key].append(timed(pipelines[key], device)[1])
    base = statistics.median(times[first]) if first in times else math.nan
    rows = []
    for key in keys:
        backend, name = key
        med = statistics.median(times[key])
        p90 = sorted(times[key])[max(0, math.ceil(0.9 * len(times[key])) - 1)]
        rows.append(Row(variant, f"{size[0]}x{size[1]}", str(device), precision, batch, name,
                        round(med, 2), round(p90, 2), round(base / med, 3), peaks[key] and round(peaks[key], 1),
                        round(agreement[key], 5),
                        round(statistics.median(e2e_times[key]), 2) if key in e2e_times else None,
                        graphs and device.type == "cuda" and name != HF_ROW and backend == "torch", backend,
                        diff.get(key)))
    for m, _ in forwards.values():
        m.set_merge("none")
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows as Markdown; the end-to-end, CUDA-graph and backend columns only when some row
    has them."""
    e2e = any(r.e2e_ms is not None for r in rows)
    graphs = any(r.graphs for r in rows)
    backends = any(r.backend != "torch" for r in rows)
    header = ("variant", "size", "device", "prec", "batch", *(("backend",) if backends else ()), "strategy",
              *(("graphs",) if graphs else ()), "median ms", "p90 ms", "speed-up", "peak MB", "argmax agree",
              *(("max logit diff vs torch",) if backends else ()), *(("e2e ms",) if e2e else ()))
    return markdown_table(header, ([r.variant, r.size, r.device, r.precision, r.batch,
                                    *((r.backend,) if backends else ()), r.strategy,
                                    *(("yes" if r.graphs else "no",) if graphs else ()),
                                    f"{r.median_ms:.1f}", f"{r.p90_ms:.1f}", f"{r.speedup:.2f}x",
                                    "n/a" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                                    f"{100 * r.agreement:.2f}%",
                                    *(("" if r.logit_diff is None else f"{r.logit_diff:.1e}",) if backends else ()),
                                    *(("n/a" if r.e2e_ms is None else f"{r.e2e_ms:.1f}",) if e2e else ())]
                                   for r in rows))
