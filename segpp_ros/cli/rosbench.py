"""segpp-rosbench: end-to-end latency through ROS against the model's own time, per input size.

    tools/netns-run segpp-rosbench --json out/rosbench.json

The node runs as its own process; this process publishes synthetic street scenes of each size
and receives the labels, alternating frame by frame with in-process calls of the inference
core. What is measured and how: segpp_ros.harness.rosbench. DDS must stay on this host: run it
inside an isolated network namespace (tools/netns-run).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..ros.env import is_isolated_network
from . import non_negative_int, parse_sizes, positive_int, write_report

PROG = "segpp-rosbench"
SCENE_SEED = 20_240_611


def rounds_arg(text: str) -> int:
    value = non_negative_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least 2 rounds (the first one is warm-up)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("480x640,1080x1920"),
                   help="comma-separated HEIGHTxWIDTH camera image sizes (default: 480x640,1080x1920)")
    p.add_argument("--max-side", type=non_negative_int, default=256,
                   help="network input size, longer side (node parameter max_side; 0: the image's own) "
                        "(default: 256)")
    p.add_argument("--threads", type=non_negative_int, default=1,
                   help="CPU threads of the node's inference and of the in-process reference "
                        "(0: PyTorch's default) (default: 1)")
    p.add_argument("--device", default="cpu", help="node parameter device, and the in-process reference's "
                   "(default: cpu)")
    p.add_argument("--precision", default="auto", help="node parameter precision, and the in-process "
                   "reference's (default: auto)")
    p.add_argument("--backend", choices=("torch", "openvino", "inductor"), default="torch",
                   help="node parameter backend, and the in-process reference's; with openvino the rounds start "
                        "once the node holds the compiled model (default: torch)")
    p.add_argument("--rounds", type=rounds_arg, default=5,
                   help="interleaved rounds per size; the first is warm-up and discarded (default: 5)")
    p.add_argument("--frames-per-round", type=positive_int, default=6,
                   help="frames through ROS and in-process calls per round (default: 6)")
    p.add_argument("--gap-ms", type=float, default=50.0,
                   help="pause after each answer, so the node is idle when a frame arrives (default: 50)")
    p.add_argument("--json", help="write all samples and the summary to this JSON file")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.gap_ms < 0:
        build_parser().error("--gap-ms must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not is_isolated_network():
        print(f"{PROG}: this benchmark starts DDS, which must not reach other hosts: run it inside an isolated "
              f"network namespace via `tools/netns-run {PROG} ...`", file=sys.stderr)
        return 2

    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from ..inference import Segmenter
    from ..harness import rosbench as bench
    from ..harness.graph import Probe
    from ..training.data.scenes import render_scene

    settings = bench.Settings(max_side=args.max_side, threads=args.threads, device=args.device,
                              precision=args.precision, backend=args.backend, rounds=args.rounds,
                              frames_per_round=args.frames_per_round, gap_ms=args.gap_ms)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    segmenter = Segmenter(None, device=args.device, precision=args.precision, max_side=args.max_side or None,
                          backend=args.backend)
    probe = Probe("segpp_rosbench")
    probe.subscribe(Image, bench.LABEL_TOPIC)
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    sender = bench.Sender(probe, probe.publisher(Image, bench.IMAGE_TOPIC))
    runs: list[bench.SizeRun] = []
    log_dir = Path(tempfile.mkdtemp(prefix="segpp-rosbench-"))
    try:
        for h, w in args.sizes:
            print(f"{h}x{w}: starting the node (max_side {args.max_side}, threads {args.threads})", flush=True)
            image = render_scene(SCENE_SEED, h, w).image
            runs.append(bench.run_size(image, settings, probe, sender, segmenter, log_dir))
    except bench.NodeFailed as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    finally:
        probe.close()

    summaries = [bench.summary_of(run, args.max_side) for run in runs]
    print(bench.report(summaries, runs, settings, segmenter.describe(), torch.get_num_threads()))
    if args.json:
        write_report(args.json, argv, {"summary": [asdict(s) for s in summaries],
                                       "samples": bench.samples_record(runs)},
                     processor=platform.processor(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                     model=segmenter.describe(), node_params=bench.node_params(settings),
                     rmw=os.environ.get("RMW_IMPLEMENTATION", "default"),
                     fastdds_profile=os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"))
        print(f"wrote {args.json}")
    return 0 if all(s.frames for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
