"""segpp-depthbench: what the 3-D outputs (~/points, ~/keypoints_3d, ~/markers_3d) cost per frame,
and the node's memory with an RGB-D camera at 30 Hz.

Per depth size and points.stride, the node's own functions on one frame (medians); then the node
process fed colour + depth + camera_infos at 30 Hz, its resident memory sampled. What is
measured and how: segpp_ros.harness.depthbench. Run it in a private network namespace:
tools/netns-run .venv/bin/segpp-depthbench
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..ros.env import is_isolated_network
from . import parse_size, parse_sizes, positive_ints, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-depthbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth-sizes", type=parse_sizes, default=parse_sizes("480x640,720x1280"),
                   help="comma-separated depth image sizes HEIGHTxWIDTH (the colour image is 720x1280)")
    p.add_argument("--strides", type=positive_ints, default=[1, 4], help="comma-separated points.stride values")
    p.add_argument("--iters", type=int, default=15, help="timed rounds per case")
    p.add_argument("--memory-size", type=parse_size, default=(720, 1280),
                   help="colour and depth size of the 30 Hz memory run (HEIGHTxWIDTH)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the 30 Hz memory run; 0 skips it")
    p.add_argument("--json", help="also write the rows and the environment to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iters < 1 or args.seconds < 0:
        print("segpp-depthbench: --iters must be >= 1 and --seconds >= 0", file=sys.stderr)
        return 2
    if args.seconds > 0 and not is_isolated_network():
        print("segpp-depthbench: the memory run starts DDS, which must not reach other hosts: run it inside an "
              "isolated network namespace via `tools/netns-run segpp-depthbench ...` (or --seconds 0)", file=sys.stderr)
        return 2
    import cv2
    import torch

    from ..harness.depthbench import costs, format_costs, format_memory, memory
    from ..ros.env import ensure_ament_prefix
    from ..samples import sample_frames

    ensure_ament_prefix()
    torch.set_num_threads(1)
    picture = cv2.cvtColor(cv2.imread(str(sample_frames()[3])), cv2.COLOR_BGR2RGB)
    rows = costs(picture, args.depth_sizes, args.strides, iters=args.iters)
    print(format_costs(rows))
    samples = []
    if args.seconds > 0:
        with tempfile.TemporaryDirectory(prefix="segpp-depthbench-") as log_dir:
            samples = memory(picture, Path(log_dir), args.memory_size, args.seconds, progress=lambda s: print(s, file=sys.stderr))
        print()
        print(format_memory(samples))
    if args.json:
        write_report(args.json, argv, {"costs": [asdict(r) for r in rows], "memory": [asdict(s) for s in samples]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
