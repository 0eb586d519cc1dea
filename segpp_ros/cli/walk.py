"""segpp-walk: person tracking on the scripted walk, with the segmentation's boxes and with a
detector's (the true ones): id switches and what tracking costs per frame. What is measured and
how: segpp_ros.training.walk_study."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import torch

from ..training.walk_study import format_table, run
from . import non_negative_int, parse_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-walk", description=__doc__)
    p.add_argument("--size", type=parse_size, default=(240, 320), help="frame size HEIGHTxWIDTH (default: 240x320)")
    p.add_argument("--max-side", type=non_negative_int, default=256, help="network input size (default: 256)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.max_side or 0, *args.size, device=args.device)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
