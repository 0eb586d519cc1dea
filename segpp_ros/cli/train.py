"""segpp-train: train SegFormer++ for segmentation or keypoints on the synthetic data.

  segpp-train --task seg --variant b0 --steps 20000 --batch-size 8 --out out/seg-b0
  segpp-train --task pose --variant b0 --input-size 256x192 --out out/pose-b0
  segpp-train --out out/seg-b0 --resume                 # continue exactly where last.pt ended
  segpp-train --task seg --batch-size 4 --report-presets none,hq,fast,2x2

Writes OUT/last.pt (every --ckpt-every steps and at the end) and, once all steps are done,
OUT/model.safetensors (loadable with segpp_ros.model.load_model).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields, replace
from typing import Any

import torch

from ..model import PRESETS, VARIANTS, CheckpointError
from ..model.runtime import keep_freed_memory
from ..training.train import (
    TrainConfig,
    format_preset_table,
    git_commit,
    load_resume_config,
    measure_training_presets,
    train,
)
from . import parse_size

DEFAULTS = TrainConfig()


def _range(text: str) -> tuple[int, int]:
    """'512,1024' -> (512, 1024)."""
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must look like LOW,HIGH, e.g. 512,1024") from None
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    # Training options default to None: the defaults live in TrainConfig, and on --resume only
    # the options actually given override the checkpoint's configuration.
    p = argparse.ArgumentParser(prog="segpp-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    p.add_argument("--task", choices=("seg", "pose"), help=f"default {d.task}")
    p.add_argument("--variant", choices=tuple(VARIANTS), help=f"MiT variant, default {d.variant}")
    p.add_argument("--num-classes", "--num-keypoints", dest="num_outputs", type=int, metavar="N",
                   help="outputs: 19 classes for seg, 17 keypoints for pose by default")
    p.add_argument("--head", choices=("mmseg", "hf"), help=f"decode head layout, default {d.head}")
    p.add_argument("--merge", choices=tuple(PRESETS), help=f"merge preset during training, default {d.merge}")
    p.add_argument("--crop", type=parse_size, metavar="HxW", help="seg training crop HxW, default %dx%d" % d.crop)
    p.add_argument("--scale-range", type=_range, metavar="LOW,HIGH",
                   help="seg: rendered image height LOW,HIGH (width twice that), default %d,%d" % d.scale_range)
    p.add_argument("--input-size", type=parse_size, metavar="HxW", help="pose input HxW, default %dx%d" % d.input_size)
    p.add_argument("--steps", type=int, help=f"optimiser updates, default {d.steps}")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, help=f"peak AdamW learning rate, default {d.lr}")
    p.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay} (none on norms/biases)")
    p.add_argument("--warmup-steps", type=int, help=f"linear warm-up before the poly decay, default {d.warmup_steps}")
    p.add_argument("--grad-clip", type=float, help="max gradient norm (default off)")
    p.add_argument("--drop-path", type=float, help=f"stochastic depth rate, default {d.drop_path}")
    p.add_argument("--seed", type=int, help="first training sample seed and init seed, default 0")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (any format load_model reads) "
                   "with a fresh schedule, e.g. a second phase on new seeds (--seed past the first run's)")
    p.add_argument("--workers", type=int, help=f"rendering processes, default {d.workers}")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--out", help="output directory, default out/<task>-<variant>")
    p.add_argument("--ckpt-every", type=int, help=f"write last.pt every N steps, default {d.ckpt_every}")
    p.add_argument("--log-every", type=int, help=f"log line every N steps, default {d.log_every}")
    p.add_argument("--fp16", action="store_true", default=None, help="store model.safetensors in float16")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--stop-after", type=int, help="end this call after N updates in total (resume later)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--report-presets", metavar="P1,P2,...", help="instead of training: time a short run per merge preset, "
                                            "e.g. none,hq,fast,2x2, and print a table")
    p.add_argument("--report-steps", type=int, default=5, help="timed steps per preset (after 1 warm-up)")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def make_config(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    given = _overrides(args)
    if args.resume:
        return replace(load_resume_config(given.get("out") or _default_out(given)), **given)
    # the code that defines the run is the code at its first start, not at its last resume
    config = replace(DEFAULTS, **given, command=shlex.join(["segpp-train", *argv]), commit=git_commit())
    return config if config.out else replace(config, out=_default_out(given))


def _default_out(given: dict[str, Any]) -> str:
    return f"out/{given.get('task', DEFAULTS.task)}-{given.get('variant', DEFAULTS.variant)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    try:
        config = make_config(args, argv)
        if torch.device(config.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        if args.report_presets:
            presets = [p for p in args.report_presets.split(",") if p]
            rows = measure_training_presets(config, presets, steps=args.report_steps)
            print(format_preset_table(rows))
            return 0
        result = train(config, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, FloatingPointError) as err:
        print(f"segpp-train: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    if result.model_path:
        print(f"model: {result.model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
