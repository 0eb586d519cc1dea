"""segpp-bench: latency, speed-up, memory and agreement of merge presets on the same weights.

All presets of one (variant, size, precision) run in the same process on the same weights,
interleaved (the order rotates every round), so drift of the machine hits every row alike
(segpp_ros.training.bench).
"""
from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import asdict

import torch

from ..inference.loader import tune_backend
from ..model import PRESETS, build_model
from ..model.runtime import keep_freed_memory
from ..training.bench import DTYPES, Row, format_table, hf_pair, run_case
from . import add_timing_args, parse_preset_args, parse_size, preset_error, write_report


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
    p.add_argument("--end-to-end", action="store_true",
                   help="also time uint8 images in to labels out (upload, normalisation, forward, upsampling with "
                        "the argmax, copy back) per preset")
    p.add_argument("--graphs", action="store_true", help="on CUDA, also time every case with CUDA graphs")
    p.add_argument("--backend", default="torch",
                   help="comma-separated backends timed side by side: torch (eager), openvino (compiled, CPU), "
                   "inductor (torch.compile; on CUDA with its CUDA graphs)")
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
    backends = [b for b in args.backend.split(",") if b]
    if not backends or any(b not in ("torch", "openvino", "inductor") for b in backends):
        print("segpp-bench: --backend takes torch, openvino and/or inductor, comma-separated", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if "openvino" in backends and device.type != "cpu":
        print("segpp-bench: --backend openvino runs on the CPU (--device cpu)", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("segpp-bench: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    tune_backend(device)  # as the node: cuDNN autotuning, TF32 for fp32 on CUDA

    rows: list[Row] = []
    for variant in [v for v in args.variants.split(",") if v]:
        for precision in precisions:
            dtype = DTYPES[precision]
            torch.manual_seed(args.seed)
            hf = None
            if args.weights:
                from ..model import load_model
                model = load_model(args.weights).fold_for_inference().to(device, dtype)
                variant = model.spec.name
            elif args.against_hf:
                model, hf = hf_pair(variant, args.classes, device, dtype)
            else:
                model = build_model(variant, num_classes=args.classes).eval().fold_for_inference().to(device, dtype)
            for size in sizes:
                for graphs in ([False, True] if args.graphs and device.type == "cuda" else [False]):
                    case = run_case(model, hf, variant, size, precision, device, presets=args.presets,
                                    batch=args.batch, warmup=args.warmup, iters=args.iters, memory=args.memory,
                                    e2e=args.end_to_end, graphs=graphs, backends=backends)
                    print(format_table(case), flush=True)
                    rows.extend(case)
            del model, hf
    print()
    print(format_table(rows))
    if args.json:
        write_report(args.json, argv, {"rows": [asdict(r) for r in rows]}, processor=platform.processor(),
                     threads=torch.get_num_threads(),
                     gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
