"""segpp-convert: turn any supported SegFormer checkpoint into a segpp safetensors file.

The result loads without pickle, carries its own model description (variant, task, head,
eps, class names / palette / keypoints) and can be stored as fp16 at half the size.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segpp_ros.model.checkpoint import SUPPORTED_FORMATS, CheckpointError, load_model, save_model
from segpp_ros.model.segformer import TASKS, SegFormerPP


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segpp-convert", description=__doc__.splitlines()[0],
        epilog="Reads: " + "; ".join(SUPPORTED_FORMATS) + ". Pickled files are read without "
               "executing code; files that would need to are refused.")
    parser.add_argument("src", type=Path, help="checkpoint file or Hugging Face folder")
    parser.add_argument("dst", type=Path, help="output file (.safetensors)")
    parser.add_argument("--variant", help="expected MiT variant (b0..b5); an error if the file holds another")
    parser.add_argument("--task", choices=TASKS, help="expected task; an error if the file holds another")
    parser.add_argument("--num-classes", type=int, help="expected number of classes / keypoints")
    parser.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    return parser


def summary(model: SegFormerPP) -> str:
    names = model.classes if model.task == "seg" else model.keypoints
    what = "classes" if model.task == "seg" else "keypoints"
    named = f", {what} named" if names else f", no {what} names in the source"
    return (f"MiT-{model.spec.name} {model.task}, {model.num_outputs} outputs{named}, "
            f"{model.head_type} head ({model.head_channels} ch), eps {model.eps.block:g}/{model.eps.embed:g}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dst.exists() and not args.force:
        print(f"segpp-convert: error: {args.dst} exists (pass --force to overwrite it)", file=sys.stderr)
        return 1
    if args.dst.exists() and args.dst.resolve() == args.src.resolve():
        print("segpp-convert: error: DST must differ from SRC", file=sys.stderr)
        return 1
    try:
        model = load_model(args.src, args.variant, args.task, args.num_classes)
        save_model(model, args.dst, fp16=args.fp16)
    except (CheckpointError, OSError) as e:
        print(f"segpp-convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: {summary(model)}{' (fp16)' if args.fp16 else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
