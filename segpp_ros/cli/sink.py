"""segpp-sink: receive the segpp node's outputs, save them as PNGs, measure latency and rate.

    segpp-sink --frames 24 --out out/demo          # the node under /segpp
    segpp-sink --prefix /robot/segpp --save-every 10

What it subscribes, how latency is measured and how files are named: segpp_ros.harness.sink.
"""
from __future__ import annotations

import argparse
import sys

from ..ros.env import ensure_ament_prefix
from . import non_negative_int, positive_float

PROG = "segpp-sink"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="ROS arguments go after --ros-args.")
    p.add_argument("--prefix", default="/segpp", help="the node's output namespace (default: /segpp)")
    p.add_argument("--out", default="out/demo", help="folder for PNGs and classes.txt (default: out/demo)")
    p.add_argument("--save-every", type=non_negative_int, default=1,
                   help="save every Nth frame; 0: save nothing (default: 1)")
    p.add_argument("--frames", type=non_negative_int, default=0,
                   help="exit after this many frames; 0: run until Ctrl-C (default)")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="exit with code 1 if no frame arrived within this many seconds (default: wait)")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options and the full argument vector for rclpy.init (program name first)."""
    ensure_ament_prefix()
    from rclpy.utilities import remove_ros_args

    full = [PROG, *(sys.argv[1:] if argv is None else argv)]
    args = build_parser().parse_args(remove_ros_args(full)[1:])
    args.prefix = "/" + args.prefix.strip("/")
    return args, full


def main(argv: list[str] | None = None) -> int:
    args, ros_argv = parse_args(argv)
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from ..harness.sink import Recorder, SinkSettings, make_sink_node
    from ..ros.spin import StopSignals, spin_until_stopped

    recorder = Recorder(SinkSettings(prefix=args.prefix, out=args.out, save_every=args.save_every,
                                     frames=args.frames, timeout=args.timeout))
    signals = StopSignals().install()
    rclpy.init(args=ros_argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 1
    try:
        node = make_sink_node(recorder)
        print(f"{PROG}: waiting for {args.prefix}/{{label,color,overlay,label_info}}"
              + (f" ({args.frames} frames)" if args.frames else ""), flush=True)
        if spin_until_stopped(node, node.result, signals.event):
            code = 0 if recorder.frames else 1  # interrupted: a success if anything was measured
        else:
            code = node.result.result()
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        signals.finish()
        recorder.close()
    print(recorder.summary(), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
