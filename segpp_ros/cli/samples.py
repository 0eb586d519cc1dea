"""Regenerate the bundled sample sequence (segpp_ros/samples) from held-out synthetic scenes.

    python -m segpp_ros.cli.samples [--out DIR] [--count N] [--quality Q]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..samples import SAMPLES_DIR
from ..training.samples import COUNT, HEIGHT, QUALITY, WIDTH, write_samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segpp_ros.cli.samples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=SAMPLES_DIR, help="folder (default: the package's own)")
    p.add_argument("--count", type=int, default=COUNT)
    p.add_argument("--quality", type=int, default=QUALITY, help="JPEG quality")
    args = p.parse_args(argv)
    paths = write_samples(args.out, args.count, args.quality)
    total = sum(path.stat().st_size for path in paths)
    print(f"{len(paths)} frames {WIDTH}x{HEIGHT} in {args.out}, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
