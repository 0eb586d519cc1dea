"""segpp-camera: publish a sequence of images in a loop, like a camera driver.

    segpp-camera --rate 10 --topic image --ros-args -r image:=/camera/image
    segpp-camera --images 'shots/*.png' --encoding bgr8 --frames 100
    segpp-camera --compressed            # sensor_msgs/CompressedImage on <topic>/compressed

Default source: the bundled sample sequence (segpp_ros/samples). The node is
segpp_ros.harness.camera: every message is encoded once at start and only stamped when published.
"""
from __future__ import annotations

import argparse
import glob
import sys

import numpy as np

from ..harness.camera import ENCODINGS, CameraSettings
from ..ros.env import ensure_ament_prefix
from . import non_negative_int, parse_size, positive_float

PROG = "segpp-camera"


def image_size(text: str) -> tuple[int, int]:
    """argparse type: any HEIGHTxWIDTH of at least 1x1 (a camera image, not a network input)."""
    return parse_size(text, minimum=1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="ROS arguments go after --ros-args (remapping, parameters, ...).")
    p.add_argument("--images", metavar="GLOB", help="image files to publish, in name order "
                   "(default: the bundled sample sequence)")
    p.add_argument("--topic", default="image", help="output topic; relative names are remappable (default: image)")
    p.add_argument("--rate", type=positive_float, default=10.0, help="frames per second (default: 10)")
    p.add_argument("--frames", type=non_negative_int, default=0,
                   help="stop after this many published frames; 0: loop forever (default)")
    p.add_argument("--encoding", default="rgb8", choices=ENCODINGS, help="sensor_msgs/Image encoding")
    p.add_argument("--compressed", action="store_true",
                   help="publish sensor_msgs/CompressedImage (JPEG) on <topic>/compressed instead")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality with --compressed")
    p.add_argument("--size", type=image_size, metavar="HxW", help="resize every image to HEIGHTxWIDTH")
    p.add_argument("--frame-id", default="camera", help="header.frame_id (default: camera)")
    p.add_argument("--reliable", action="store_true",
                   help="reliable QoS (default: best effort, keep last 1, as camera drivers do)")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options and the full argument vector for rclpy.init (program name first, since rcl
    skips argv[0]); the --ros-args part is left to rclpy."""
    ensure_ament_prefix()
    from rclpy.utilities import remove_ros_args

    full = [PROG, *(sys.argv[1:] if argv is None else argv)]
    return build_parser().parse_args(remove_ros_args(full)[1:]), full


def image_paths(pattern: str | None) -> list[str]:
    """Sorted files matching ``pattern``, or the bundled samples."""
    if pattern is None:
        from ..samples import sample_frames

        return [str(p) for p in sample_frames()]
    return sorted(glob.glob(pattern))


def load_images(paths: list[str], size: tuple[int, int] | None) -> list[np.ndarray]:
    """RGB uint8 arrays of the readable files, resized to ``size`` (H, W) when given."""
    import cv2

    images = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{PROG}: skipping {path}: not a readable image", file=sys.stderr)
            continue
        if size is not None and bgr.shape[:2] != size:
            # INTER_AREA: no aliasing when shrinking, which is the common case here
            bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


def main(argv: list[str] | None = None) -> int:
    args, ros_argv = parse_args(argv)
    images = load_images(image_paths(args.images), args.size)
    if not images:
        print(f"{PROG}: no readable images{' match ' + repr(args.images) if args.images else ''}", file=sys.stderr)
        return 2
    settings = CameraSettings(topic=args.topic, rate=args.rate, frames=args.frames, encoding=args.encoding,
                              compressed=args.compressed, quality=args.quality, frame_id=args.frame_id,
                              reliable=args.reliable)
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from ..harness.camera import PublishStats, encode_messages, make_camera_node
    from ..ros.spin import StopSignals, spin_until_stopped

    try:
        messages = encode_messages(images, settings)
    except ValueError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    stats = PublishStats()
    signals = StopSignals().install()
    rclpy.init(args=ros_argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = make_camera_node(messages, settings, stats)
        spin_until_stopped(node, node.finished, signals.event)  # Ctrl-C / SIGTERM: the normal end of an endless camera
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        signals.finish()
    print(stats.summary(args.rate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
