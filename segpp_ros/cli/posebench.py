"""segpp-posebench: what human keypoints cost per frame, by number of persons and merge preset.

Batched (one call with N boxes) against sequential (N calls) PoseEstimator time, for every
merge preset, interleaved in one process; see segpp_ros.training.posebench.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import torch

from ..model import PRESETS
from ..training.posebench import format_tables, run
from . import add_timing_args, parse_preset_args, parse_size, positive_ints, preset_error, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-posebench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="pose checkpoint (default: the embedded B0 pose model)")
    p.add_argument("--input-size", type=parse_size, default=(384, 288), help="pose crop size HEIGHTxWIDTH")
    p.add_argument("--frame", type=parse_size, default=(720, 1280), help="synthetic frame size HEIGHTxWIDTH")
    p.add_argument("--persons", type=positive_ints, default=[1, 4, 8], help="comma-separated person counts")
    p.add_argument("--presets", default="none,hq,fast,2x2,downsample",
                   help=f"comma-separated merge presets; 'none' is the reference ({', '.join(PRESETS)})")
    p.add_argument("--flip-test", action="store_true", help="time with flip test (doubles the crops)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help="auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16 or bf16")
    add_timing_args(p, warmup=1, iters=5, threads=2, rounds_of="cases")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_preset_args(build_parser(), argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    error = preset_error("segpp-posebench", args.presets)
    if error:
        print(error, file=sys.stderr)
        return 2
    if args.iters < 1 or args.warmup < 0:
        print("segpp-posebench: --iters must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run(args.weights, presets=args.presets, persons=args.persons, frame=args.frame,
                   input_size=args.input_size, device=args.device, precision=args.precision,
                   flip_test=args.flip_test, seed=args.seed, warmup=args.warmup, iters=args.iters)
    except (ValueError, RuntimeError) as err:         # CheckpointError is a RuntimeError
        print(f"segpp-posebench: {err}", file=sys.stderr)
        return 2
    print(format_tables(rows))
    if args.json:
        write_report(args.json, argv, {"rows": [asdict(r) for r in rows]}, threads=torch.get_num_threads(),
                     device=args.device, precision=args.precision, input_size=list(args.input_size),
                     frame=list(args.frame), flip_test=args.flip_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
