"""segpp-export: a checkpoint as an ONNX file (opset 18) at one input size and merge configuration.

    segpp-export model.safetensors model-fast.onnx --size 1024x2048 --merge fast --check
    segpp-export - pose.onnx --task pose --size 256x192                 # the embedded pose model

For OpenVINO, ONNX Runtime and TensorRT (docs/benchmarks.md says how to build an engine and which
limits apply). The file holds the forward pass (normalised RGB [B, 3, H, W] float32 in, logits or
heatmaps at a quarter of the size out) with static shapes, and as metadata the task, variant,
merge configuration, input shape, normalisation and the class or keypoint names. ``--check`` runs
it in ONNX Runtime on the CPU against PyTorch on a random input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import parse_size, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="checkpoint (any supported layout, or a Hugging Face model ID); '-' for the "
                                   "embedded model of --task")
    p.add_argument("out", type=Path, help="the ONNX file to write")
    p.add_argument("--task", choices=("seg", "pose"), default="seg", help="with '-': which embedded model")
    p.add_argument("--size", type=parse_size, default=(1024, 1024), help="input HEIGHTxWIDTH (default 1024x1024)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--merge", default="none",
                   help="merge preset, or a custom configuration as JSON/YAML (the schema of merge.custom)")
    p.add_argument("--check", action="store_true", help="run the file in ONNX Runtime against PyTorch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    from ..inference.compiled import export_onnx
    from ..inference.loader import resolve_weights
    from ..model import load_model, resolve_merge

    try:
        merge = resolve_merge(args.merge if args.merge in _presets() else _parse(args.merge))
        if args.weights == "-":
            from ..weights import default_weights
            weights = default_weights(args.task)
        else:
            weights = resolve_weights(args.weights)
        model = load_model(weights).fold_for_inference().eval()
    except (ValueError, RuntimeError, OSError) as err:    # CheckpointError is a RuntimeError
        print(f"segpp-export: {err}", file=sys.stderr)
        return 2
    shape = (args.batch, 3, *args.size)
    path = export_onnx(model, shape, args.out, merge)
    print(f"wrote {path}: {model.task} MiT-{model.spec.name.upper()}, input {list(shape)}, merge '{merge.name}'")
    if args.check:
        import onnxruntime as ort

        x = torch.randn(shape)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": x.numpy()})[0]
        model.set_merge(merge)
        with torch.inference_mode():
            want = model(x).numpy()
        diff = float(np.abs(got - want).max())
        agree = float((got.argmax(1) == want.argmax(1)).mean())
        print(f"ONNX Runtime against PyTorch: max |logit difference| {diff:.2e}, argmax agreement {100 * agree:.3f} %")
        if diff > 1e-4:
            print("segpp-export: the file does not reproduce PyTorch's output (above 1e-4)", file=sys.stderr)
            return 1
    return 0


def _presets() -> tuple[str, ...]:
    from ..model import PRESETS
    return tuple(PRESETS)


def _parse(text: str) -> object:
    """A custom configuration given as JSON or YAML text; anything else is a preset name."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"--merge {text!r} is neither a preset nor a configuration: {err}") from None
    return value if isinstance(value, dict) else text


if __name__ == "__main__":
    sys.exit(main())
