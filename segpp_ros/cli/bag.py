"""segpp-bag: a recorded bag through the segpp pipeline into a new bag (or an MP4), no ROS graph.

    segpp-bag recording/ out/labelled                   # ROS 2 bag folder (sqlite3 or MCAP) -> MCAP bag
    segpp-bag drive.bag out/labelled --topic /cam/image/compressed --every 3 --merge fast
    segpp-bag recording/ --video out/overlay.mp4        # the overlays with skeletons, to look at
    segpp-bag recording/ out/labelled --params-file robot/segpp.yaml   # labelled as that node labels

The output bag holds <prefix>/label, /color, /overlay, /keypoints, /persons (each with its input's header,
recorded at the input's receive time), /label_info and /keypoint_info, and the input topic
copied. Ctrl-C ends the run after the frame in progress and leaves a readable bag. What is read
and written: segpp_ros.bags.runner.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import non_negative_float, non_negative_int, positive_int, preset_error, stop_on_sigint

if TYPE_CHECKING:              # the runner (torch, rosbags) is imported when a bag is run
    from ..bags.runner import Options

PROG = "segpp-bag"


def outputs_arg(text: str) -> tuple[str, ...]:
    from ..bags.runner import OUTPUTS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--outputs takes names from {', '.join(OUTPUTS)}; got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="the bag: a ROS 2 bag folder (or its .mcap / .db3 file), or a ROS 1 .bag")
    p.add_argument("output", type=Path, nargs="?", help="the new bag folder (must not exist); not with --video")
    p.add_argument("--video", type=Path, help="write the overlays (with skeletons) to this MP4 instead of a bag")
    add_bag_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_bag_options(p: argparse.ArgumentParser) -> None:
    """What segpp-bag does to a bag: its options, shared with segpp-fleet."""
    p.add_argument("--topic", help="the image topic (sensor_msgs/Image or CompressedImage; default: the bag's "
                                   "first, the others listed)")
    p.add_argument("--prefix", default="/segpp", help="output topic prefix (default: /segpp, as the node's)")
    p.add_argument("--outputs", type=outputs_arg, default=None,
                   help="comma-separated outputs to write: label, color, overlay, keypoints, persons (default: all)")
    p.add_argument("--params-file", type=Path,
                   help="the segpp node's ROS 2 params file (e.g. the robot's): every frame is labelled as the node "
                        "with those parameters labels it (merging, output_resolution, pose.*, ...); the options "
                        "below override it")
    p.add_argument("--weights", help="segmentation weights (default: the embedded model)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", help="auto, fp32, fp16, bf16 (default: auto)")
    p.add_argument("--backend", choices=("auto", "torch", "openvino", "inductor"),
                   help="inference engine, as the node's parameter backend (default: auto: openvino on the CPU)")
    p.add_argument("--merge", help="merge preset: none, hq, 2x2, fast, downsample (default: none)")
    p.add_argument("--max-side", type=non_negative_int,
                   help="network input size, longer side (0: the image's own) (default: 1024)")
    p.add_argument("--no-pose", action="store_true", help="no keypoints")
    p.add_argument("--person-classes", help="segmentation classes that are persons (default: person,rider)")
    p.add_argument("--depth-topic", help="an aligned depth image topic (16UC1 or 32FC1, e.g. "
                   "/camera/aligned_depth_to_color/image_raw): writes keypoints_3d and points, each frame paired with "
                   "the depth image nearest its stamp within depth.max_skew_ms, as the node pairs them")
    p.add_argument("--depth-info-topic", help="the depth camera_info (default: the depth topic's sibling camera_info)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="frames per forward pass (default: 1; each frame gets what it gets alone)")
    p.add_argument("--every", type=positive_int, default=1, help="process every Nth frame (default: 1)")
    p.add_argument("--start", type=non_negative_float, help="seconds from the bag's start to begin at")
    p.add_argument("--end", type=non_negative_float, help="seconds from the bag's start to end at")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output bag storage (default: mcap)")
    p.add_argument("--fps", type=float, help="--video frame rate (default: the processed frames' rate in the bag)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.output is None) == (args.video is None):
        parser.error("give either an output bag folder or --video FILE.mp4")
    if args.output is not None and args.output.exists():
        parser.error(f"{args.output} exists already: the output bag must be a new folder")
    check_bag_options(parser, args)
    return args


def check_bag_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error("--end must be after --start")
    if args.depth_topic is None and (args.depth_info_topic is not None
                                     or {"keypoints_3d", "points"} & set(args.outputs or ())):
        parser.error("keypoints_3d, points and --depth-info-topic need a depth image: give --depth-topic")
    problem = preset_error("--merge", [args.merge]) if args.merge is not None else None
    if problem:
        parser.error(problem)


def options_of(args: argparse.Namespace, prog: str) -> "Options | None":
    """The runner's Options from the parsed bag options (the params file read); None after
    printing why the params file cannot be read."""
    from ..bags.runner import OUTPUTS, Options
    from ..ros.params import read_params_file

    try:
        params = read_params_file(args.params_file) if args.params_file else {}
    except ValueError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return None
    given = {name: value for name, value in (("weights", args.weights), ("device", args.device),
                                            ("precision", args.precision), ("backend", args.backend),
                                            ("merge", args.merge),
                                            ("max_side", args.max_side), ("person_classes", args.person_classes),
                                            ("pose", False if args.no_pose else None)) if value is not None}
    return Options.from_params(params, topic=args.topic, prefix=args.prefix, outputs=args.outputs or OUTPUTS,
                               every=args.every, batch=args.batch, depth_topic=args.depth_topic,
                               depth_info_topic=args.depth_info_topic, start_s=args.start, end_s=args.end,
                               storage=args.storage, video_fps=args.fps, **given)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..bags.runner import BagError, process

    options = options_of(args, PROG)
    if options is None:
        return 1

    def bar(total: int | None):
        from tqdm import tqdm

        return tqdm(total=total, unit="frame", desc=PROG, disable=args.quiet, file=sys.stderr)
    # Ctrl-C: the frames in progress end, then the bag is closed: a readable bag up to there
    with stop_on_sigint() as stop:
        try:
            summary = process(args.input, args.output, options, video=args.video, stop=stop, progress=bar)
        except BagError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 1
    if summary.note:
        print(f"{PROG}: {summary.note}", file=sys.stderr)
    if summary.depth_note:
        print(f"{PROG}: {summary.depth_note}", file=sys.stderr)
    if summary.depth:
        print(f"{PROG}: depth: " + ", ".join(f"{n} {key}" for key, n in summary.depth.items()) + " frames")
    written = ", ".join(f"{topic} {n}" for topic, n in sorted(summary.written.items()))
    ended = "stopped early (Ctrl-C); " if summary.stopped else ""
    print(f"{PROG}: {summary.topic}: {summary.processed} frames processed of {summary.read} read "
          f"({summary.bad_frames} unreadable) in {summary.seconds:.1f} s; {ended}wrote "
          f"{args.output or args.video}: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
