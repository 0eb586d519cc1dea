"""segpp-offline: offline runner without ROS. Segments held-out synthetic street scenes (or
your images) with the embedded model, writes label / colour / overlay PNGs, prints latency,
frame rate and, for synthetic scenes, mIoU against the generator's ground truth.
(The ROS pipeline demo, camera -> node -> sink, is segpp-demo.)"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import numpy as np
import torch

from ..inference.vocab import CITYSCAPES_CLASSES
from ..model import PRESETS
from ..training.metrics import confusion_matrix, mean_iou
from . import parse_size


def _frames(args: argparse.Namespace):
    """(name, RGB image, ground-truth labels or None) for each input frame."""
    import cv2

    if args.images:
        for path in sorted(glob.glob(args.images)):
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                print(f"segpp-offline: skipping {path}: not a readable image", file=sys.stderr)
                continue
            yield os.path.splitext(os.path.basename(path))[0], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None
        return
    from ..training.data.scenes import render_scene
    from ..training.train import HELD_OUT_SEED_BASE

    h, w = args.size
    for i in range(args.scenes):
        scene = render_scene(HELD_OUT_SEED_BASE + i, h, w)
        yield f"scene{i:03d}", scene.image, scene.labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-offline", description=__doc__)
    p.add_argument("--weights", help="segmentation checkpoint (default: the embedded model)")
    p.add_argument("--images", help="glob of image files to segment instead of synthetic scenes")
    p.add_argument("--scenes", type=int, default=8, help="held-out synthetic scenes to segment")
    p.add_argument("--size", type=parse_size, default=(512, 1024), help="synthetic scene size HEIGHTxWIDTH")
    p.add_argument("--merge", default="none", choices=sorted(PRESETS))
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--max-side", type=int, default=0, help="resize so the longer side is at most this (0: off)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="out/demo", help="folder for the PNGs")
    return p


def main(argv: list[str] | None = None) -> int:
    import cv2

    from ..inference import Segmenter

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        seg = Segmenter(args.weights, args.device, args.precision, args.merge, args.max_side or None)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"segpp-offline: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    print(f"model {seg.weights} ({seg.model.spec.name}, {seg.model.num_outputs} classes) on {seg.device}, "
          f"merge {seg.model.merge.name}")
    n = seg.model.num_outputs
    # mIoU against the generator's truth only means something for a model of its label set
    scored = seg.classes == list(CITYSCAPES_CLASSES)
    conf = np.zeros((n, n), np.int64)
    net, total, wall = [], [], []
    for name, image, truth in _frames(args):
        start = time.perf_counter()
        result = seg(image)
        wall.append(time.perf_counter() - start)
        net.append(result.network_ms)
        total.append(result.total_ms)
        for suffix, picture in (("label", result.labels), ("color", seg.colorize(result.labels)),
                                ("overlay", seg.overlay(image, result.labels))):
            out = picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
            cv2.imwrite(os.path.join(args.out, f"{name}_{suffix}.png"), out)
        line = f"{name}: {image.shape[0]}x{image.shape[1]}  network {result.network_ms:.0f} ms  total {result.total_ms:.0f} ms"
        if truth is not None and scored:
            c = confusion_matrix(result.labels, truth, n)
            conf += c
            line += f"  mIoU {mean_iou(c):.1f}"
        print(line, flush=True)
    if not total:
        print("segpp-offline: no frames", file=sys.stderr)
        return 1
    steady = wall[1:] or wall
    print(f"{len(total)} frames: network median {statistics.median(net):.0f} ms, total median "
          f"{statistics.median(total):.0f} ms, {1 / statistics.median(steady):.2f} frames/s after the first"
          + (f", mIoU over all frames {mean_iou(conf):.1f}" if conf.any() else "") + f"; PNGs in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
