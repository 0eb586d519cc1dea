"""segpp-fleetbench: segpp-fleet's throughput with 1 and 2 workers (or --workers) on this machine, in
one run; what is measured: segpp_ros.bags.fleetbench.

    segpp-fleetbench --workers 1,2 --bags 8 --frames 20 --json out/fleet-cpu.json
"""
from __future__ import annotations

import argparse
import sys

from . import parse_size, positive_int, positive_ints, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segpp-fleetbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=positive_ints, default=[1, 2], help="comma-separated worker counts")
    p.add_argument("--bags", type=positive_int, default=8, help="bags labelled per worker count")
    p.add_argument("--frames", type=positive_int, default=20, help="frames per bag")
    p.add_argument("--size", type=parse_size, default=(480, 640), help="frame size HEIGHTxWIDTH")
    p.add_argument("--max-side", type=positive_int, default=512, help="network input size, longer side")
    p.add_argument("--backend", default="torch", choices=("torch", "openvino"), help="inference engine")
    p.add_argument("--batch", type=positive_int, default=1, help="frames per forward pass")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dataclasses import asdict

    from ..bags.fleetbench import format_scaling, scaling
    from ..bags.runner import Options
    from ..samples import sample_frames

    options = Options(device="cpu", backend=args.backend, max_side=args.max_side, batch=args.batch)
    rows = scaling(sample_frames(), options, args.workers, args.bags, args.frames, args.size)
    print(format_scaling(rows))
    if args.json:
        write_report(args.json, argv, {"rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
