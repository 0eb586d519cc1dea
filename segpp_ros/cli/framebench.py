"""segpp-framebench: what a camera frame costs the Segmenter around its network pass, on the CPU.

Pre-processing, network, labels and colours + overlay per frame size, max_side and thread
count, the fast frame path beside the classic one in one run (medians); then the label step
for 19 and 150 classes. What is measured and how: segpp_ros.training.framebench.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from . import parse_size, parse_sizes, positive_ints, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-framebench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("480x640,720x1280,1080x1920"),
                   help="comma-separated camera frame sizes HEIGHTxWIDTH")
    p.add_argument("--max-sides", type=positive_ints, default=[256, 512, 1024], help="comma-separated network max_side values")
    p.add_argument("--threads", type=positive_ints, default=[1, 2], help="comma-separated torch thread counts")
    p.add_argument("--classes-size", type=parse_size, default=(1080, 1920),
                   help="frame size of the 19- against 150-class label step (HEIGHTxWIDTH)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds per case")
    p.add_argument("--iters", type=int, default=9, help="timed rounds per case")
    p.add_argument("--json", help="also write the rows and the environment to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        print("segpp-framebench: --iters must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    import cv2

    from ..samples import sample_frames
    from ..training.framebench import classes_cost, format_classes, format_split, split

    # a held-out street scene with persons, cars, road and buildings
    picture = cv2.cvtColor(cv2.imread(str(sample_frames()[3])), cv2.COLOR_BGR2RGB)
    rows = split(picture, args.sizes, args.max_sides, args.threads, args.warmup, args.iters)
    print(format_split(rows))
    classes = classes_cost(picture, args.classes_size, args.max_sides[0], iters=args.iters)
    print()
    print(format_classes(classes))
    if args.json:
        write_report(args.json, argv, {"split": [asdict(r) for r in rows], "classes": [asdict(r) for r in classes]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
