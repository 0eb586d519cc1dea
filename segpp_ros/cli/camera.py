"""segpp-camera: publish a sequence of images in a loop, like a camera driver.

    segpp-camera --rate 10 --topic image --ros-args -r image:=/camera/image
    segpp-camera --images 'shots/*.png' --encoding bgr8 --frames 100
    segpp-camera --compressed            # sensor_msgs/CompressedImage on <topic>/compressed

Default source: the bundled sample sequence (segpp_ros/samples). Every message is encoded
once at start; publishing only stamps it (node clock, now), so the publish rate is not limited
by encoding and the stamp measures latency from the moment the frame leaves the "camera".
"""
from __future__ import annotations

import argparse
import glob
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rosenv import ensure_ament_prefix
from . import parse_size

PROG = "segpp-camera"
ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")  # conversions.SUPPORTED_ENCODINGS


def image_size(text: str) -> tuple[int, int]:
    """argparse type: any HEIGHTxWIDTH of at least 1x1 (a camera image, not a network input)."""
    return parse_size(text, minimum=1)


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


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


def encode_messages(images: list[np.ndarray], args: argparse.Namespace) -> list:
    """One ready-to-publish message per image, each with its own Header (stamped at publish)."""
    from std_msgs.msg import Header

    from ..conversions import rgb_to_compressed, rgb_to_image

    messages = []
    for image in images:
        header = Header(frame_id=args.frame_id)
        if args.compressed:
            messages.append(rgb_to_compressed(image, header, "jpeg", args.quality))
        else:
            messages.append(rgb_to_image(image, header, args.encoding))
    return messages


@dataclass
class PublishStats:
    """When frames went out, for the achieved-rate line."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    topic: str = ""

    def tick(self) -> None:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        self.last = now
        self.count += 1

    def rate(self) -> float:
        """Frames per second between the first and the last frame (0 with fewer than 2)."""
        if self.count < 2 or self.last == self.first:
            return 0.0
        return (self.count - 1) / (self.last - self.first)

    def summary(self, target: float) -> str:
        span = (self.last - self.first) if self.count else 0.0
        return (f"{PROG}: published {self.count} frames on {self.topic} in {span:.1f} s: "
                f"{self.rate():.2f} frames/s (target {target:g})")


def make_node(messages: list, args: argparse.Namespace, stats: PublishStats):
    """The segpp_camera node: a timer that stamps and publishes the next message."""
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.task import Future
    from sensor_msgs.msg import CompressedImage, Image

    class CameraNode(Node):
        def __init__(self) -> None:
            super().__init__("segpp_camera")
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=(ReliabilityPolicy.RELIABLE if args.reliable
                                          else ReliabilityPolicy.BEST_EFFORT))
            if args.compressed:
                # image_transport's naming, so `-r <topic>:=...` moves the compressed topic too
                topic = self.resolve_topic_name(args.topic) + "/compressed"
                self.publisher = self.create_publisher(CompressedImage, topic, qos)
            else:
                self.publisher = self.create_publisher(Image, args.topic, qos)
            stats.topic = self.publisher.topic_name
            self.finished = Future()
            self._index = 0
            self.create_timer(1.0 / args.rate, self._publish_next)
            self.get_logger().info(f"publishing {len(messages)} images in a loop on {stats.topic} at "
                                   f"{args.rate:g} Hz ({'compressed' if args.compressed else args.encoding})")

        def _publish_next(self) -> None:
            if self.finished.done():
                return
            msg = messages[self._index % len(messages)]
            self._index += 1
            msg.header.stamp = self.get_clock().now().to_msg()
            self.publisher.publish(msg)
            stats.tick()
            if args.frames and stats.count >= args.frames:
                self.finished.set_result(True)

    return CameraNode()


def spin_until_stopped(node: Any, done: Any, poll_s: float = 0.1) -> bool:
    """Spin ``node`` until the future ``done`` completes or SIGINT/SIGTERM arrives; True if
    a signal stopped it.

    rclpy's own signal handler shuts the context down under a spinning executor, which then
    fails in its next wait (RCLError) instead of returning; so init rclpy with
    SignalHandlerOptions.NO and stop here, between short waits, with the context intact.
    """
    import signal

    from rclpy.executors import SingleThreadedExecutor

    stopped = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopped.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stopped.is_set() and not done.done():
            executor.spin_once(timeout_sec=poll_s)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stopped.is_set()


def main(argv: list[str] | None = None) -> int:
    args, ros_argv = parse_args(argv)
    images = load_images(image_paths(args.images), args.size)
    if not images:
        print(f"{PROG}: no readable images{' match ' + repr(args.images) if args.images else ''}", file=sys.stderr)
        return 2
    try:
        messages = encode_messages(images, args)
    except ValueError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    stats = PublishStats()
    rclpy.init(args=ros_argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = make_node(messages, args, stats)
        spin_until_stopped(node, node.finished)  # Ctrl-C / SIGTERM: the normal end of an endless camera
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    print(stats.summary(args.rate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
