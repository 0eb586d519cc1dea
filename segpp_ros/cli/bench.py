"""segpp-bench: latency, speed-up, memory and agreement of merge presets on the same weights.

All presets of one (variant, size, precision) run in the same process on the same weights,
interleaved (the order rotates every round), so drift of the machine hits every row alike.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from . import add_timing_args, parse_preset_args, parse_size, preset_error
from ..model import PRESETS, SegFormerPP, build_model
from ..model.runtime import keep_freed_memory
from ..timing import markdown_table, peak_memory_mb, rotated, timed

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
             precision: str, args: argparse.Namespace, device: torch.device) -> list[Row]:
    dtype = DTYPES[precision]
    x = synthetic_batch(args.batch, *size).to(device, dtype)
    calls: dict[str, Callable[[], torch.Tensor]] = {}
    for name in args.presets:
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
            peaks[name] = peak_memory_mb(call, device) if args.memory else None
        for _ in range(args.warmup):
            for call in calls.values():
                call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for i in range(args.iters):
            for name in rotated(names, i):
                times[name].append(timed(calls[name], device)[1])
    base = statistics.median(times["none"]) if "none" in times else math.nan
    rows = []
    for name in names:
        med = statistics.median(times[name])
        p90 = sorted(times[name])[max(0, math.ceil(0.9 * len(times[name])) - 1)]
        rows.append(Row(variant, f"{size[0]}x{size[1]}", str(device), precision, args.batch, name,
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="b0", help="comma-separated MiT variants (b0..b5)")
    p.add_argument("--presets", default="none,hq,fast,2x2,downsample",
                   help=f"comma-separated merge presets; 'none' is the reference ({', '.join(PRESETS)})")
    p.add_argument("--sizes", default="1024x1024", help="comma-separated HEIGHTxWIDTH input sizes")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16, bf16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--classes", type=int, default=19, help="number of classes of the random model")
    p.add_argument("--weights", help="checkpoint to benchmark instead of random weights (one variant)")
    add_timing_args(p, warmup=2, iters=10, threads=0, rounds_of="presets")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    p.add_argument("--against-hf", action="store_true",
                   help="add HF transformers' SegFormer on the same weights (our rows then use the HF head)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_preset_args(build_parser(), argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    error = preset_error("segpp-bench", args.presets)
    if error:
        print(error, file=sys.stderr)
        return 2
    precisions = [p for p in args.precision.split(",") if p]
    if any(p not in DTYPES for p in precisions):
        print(f"segpp-bench: --precision takes {', '.join(DTYPES)}", file=sys.stderr)
        return 2
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    except argparse.ArgumentTypeError as err:
        print(f"segpp-bench: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("segpp-bench: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    rows: list[Row] = []
    for variant in [v for v in args.variants.split(",") if v]:
        for precision in precisions:
            dtype = DTYPES[precision]
            torch.manual_seed(args.seed)
            hf = None
            if args.weights:
                from ..model import load_model
                model = load_model(args.weights).to(device, dtype)
                variant = model.spec.name
            elif args.against_hf:
                model, hf = hf_pair(variant, args.classes, device, dtype)
            else:
                model = build_model(variant, num_classes=args.classes).eval().to(device, dtype)
            for size in sizes:
                case = run_case(model, hf, variant, size, precision, args, device)
                print(format_table(case), flush=True)
                rows.extend(case)
            del model, hf
    print()
    print(format_table(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
               "processor": platform.processor(), "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "argv": sys.argv[1:] if argv is None else argv}
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
