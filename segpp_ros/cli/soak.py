"""segpp-soak: leave the node running for a while as a robot would, and report whether it can be.

    tools/netns-run segpp-soak --minutes 30 --json out/soak.json

The node runs as its own process; this process is its camera (synthetic street scenes at
--rate, cycling through --sizes, restarting now and then) and its operator (live parameter
changes). What is sampled and how the summary is made: segpp_ros.harness.soak. A benchmark, not a
test: it prints a table and exits 0 unless the node died or exited badly. DDS must stay on this
host: run it inside an isolated network namespace (tools/netns-run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ..ros.env import is_isolated_network
from . import non_negative_int, parse_size, positive_float

PROG = "segpp-soak"
SCENE_SEED = 20_261_130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=positive_float, default=30.0, help="how long (default: 30)")
    p.add_argument("--rate", type=positive_float, default=30.0, help="camera frames per second (default: 30)")
    p.add_argument("--sizes", default="480x640,720x1280,1080x1920,360x640",
                   help="camera image sizes, cycled (default: 480x640,720x1280,1080x1920,360x640)")
    p.add_argument("--size-period", type=positive_float, default=60.0, help="seconds per size (default: 60)")
    p.add_argument("--camera-restart", type=positive_float, default=300.0,
                   help="seconds between camera restarts (default: 300)")
    p.add_argument("--param-period", type=positive_float, default=20.0,
                   help="seconds between live parameter changes (default: 20)")
    p.add_argument("--sample", type=positive_float, default=5.0, help="seconds between samples (default: 5)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="minutes left out of the memory slope: at least one cycle of sizes (default: 5)")
    p.add_argument("--no-pose", dest="pose", action="store_false", help="keypoints off (default: on)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="node parameter threads (default: 0)")
    p.add_argument("--json", help="write the settings, summary and every sample to this JSON file")
    p.add_argument("--report", metavar="JSON", help="print the summary of a recorded run (its --json file) and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        from ..harness.soak import format_summary, from_record, summarize

        with open(args.report) as f:
            samples, settings = from_record(json.load(f))
        print(format_summary(summarize(samples, settings)))
        return 0
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as err:
        build_parser().error(str(err))
    if not is_isolated_network():
        print(f"{PROG}: this starts DDS, which must not reach other hosts: run it inside an isolated network "
              f"namespace via `tools/netns-run {PROG} ...`", file=sys.stderr)
        return 2
    from ..harness import soak
    from ..training.data.scenes import render_scene

    settings = soak.Settings(minutes=args.minutes, rate_hz=args.rate, size_period_s=args.size_period,
                             camera_restart_s=args.camera_restart, param_period_s=args.param_period,
                             sample_s=args.sample, warmup_min=args.warmup, pose=args.pose, threads=args.threads)
    images = [render_scene(SCENE_SEED + i, h, w).image for i, (h, w) in enumerate(sizes)]
    try:
        samples, _ = soak.run(images, settings, Path(tempfile.mkdtemp(prefix="segpp-soak-")),
                              progress=lambda line: print(line, flush=True))
    except RuntimeError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    summary = soak.summarize(samples, settings)
    print()
    print(soak.format_summary(summary))
    for message in summary.error_messages:
        print(f"ERROR seen: {message}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(soak.record(samples, summary, settings), f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
