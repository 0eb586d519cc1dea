"""segpp-camerabench: several cameras through one node, batched against one camera at a time.

    tools/netns-run segpp-camerabench --json out/camerabench.json

Per image size and camera count, one node process with that many cameras; this process is the
cameras (synthetic street scenes, all cameras at the same instants) and receives the labels.
What is measured and how: segpp_ros.harness.camerabench. DDS must stay on this host: run it inside
an isolated network namespace (tools/netns-run).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..ros.env import is_isolated_network
from . import non_negative_int, parse_sizes, positive_int, positive_ints, write_report

PROG = "segpp-camerabench"
SCENE_SEED = 20_240_612


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("480x640,720x1280"),
                   help="comma-separated HEIGHTxWIDTH camera image sizes (default: 480x640,720x1280)")
    p.add_argument("--cameras", type=positive_ints, default=positive_ints("1,2,4"),
                   help="comma-separated camera counts (default: 1,2,4)")
    p.add_argument("--max-side", type=non_negative_int, default=256,
                   help="node parameter max_side (default: 256)")
    p.add_argument("--threads", type=non_negative_int, default=1,
                   help="node parameter threads (0: PyTorch's default) (default: 1)")
    p.add_argument("--device", default="cpu", help="node parameter device (default: cpu)")
    p.add_argument("--precision", default="auto", help="node parameter precision (default: auto)")
    p.add_argument("--rate", type=float, default=15.0, help="frames per second of each camera (default: 15)")
    p.add_argument("--seconds", type=float, default=4.0, help="counted seconds per round and mode (default: 4)")
    p.add_argument("--rounds", type=positive_int, default=2, help="rounds per mode, interleaved (default: 2)")
    p.add_argument("--window-ms", type=float, default=10.0, help="node parameter batch_window_ms (default: 10)")
    p.add_argument("--json", help="write the rows and every latency sample to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.window_ms < 0:
        build_parser().error("--rate and --seconds must be > 0, --window-ms >= 0")
    if not is_isolated_network():
        print(f"{PROG}: this benchmark starts DDS, which must not reach other hosts: run it inside an isolated "
              f"network namespace via `tools/netns-run {PROG} ...`", file=sys.stderr)
        return 2

    from ..harness import camerabench
    from ..training.data.scenes import render_scene

    settings = camerabench.Settings(max_side=args.max_side, threads=args.threads, device=args.device,
                                    precision=args.precision, rate_hz=args.rate, seconds=args.seconds,
                                    rounds=args.rounds, window_ms=args.window_ms)
    log_dir = Path(tempfile.mkdtemp(prefix="segpp-camerabench-"))
    runs = []
    try:
        for h, w in args.sizes:
            image = render_scene(SCENE_SEED, h, w).image
            for count in args.cameras:
                print(f"{h}x{w}, {count} camera(s): starting the node (max_side {args.max_side}, threads "
                      f"{args.threads})", flush=True)
                runs += camerabench.run_cameras(image, count, settings, log_dir)
    except RuntimeError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    rows = [camerabench.summarize(run, args.max_side) for run in runs]
    print()
    print(camerabench.format_table(rows))
    print()
    print(f"device {args.device}, precision {args.precision}, node threads {args.threads}, max_side "
          f"{args.max_side}; each camera {args.rate:g} frames/s, all cameras at the same instants; "
          f"{args.rounds} rounds x {args.seconds:g} s per mode, interleaved; batch_window_ms {args.window_ms:g}")
    print("batched / one at a time, labels per second: " + ", ".join(camerabench.speedups(rows)))
    if args.json:
        write_report(args.json, argv, {"rows": [asdict(r) for r in rows], "samples": [asdict(run) for run in runs]},
                     cpus=os.cpu_count(), settings=asdict(settings))
        print(f"wrote {args.json}")
    return 0 if all(r.answered for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
