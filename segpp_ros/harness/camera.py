"""A camera for demos, tests and benchmarks: publishes a list of images in a loop (rclpy).

Every message is encoded once at start; publishing only stamps it (node clock, now), so the
publish rate is not limited by encoding and the stamp measures latency from the moment the
frame leaves the "camera". The command is segpp-camera (segpp_ros.cli.camera).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")  # conversions.SUPPORTED_ENCODINGS


@dataclass(frozen=True)
class CameraSettings:
    """topic (relative names are remappable), frames per second, frames to publish (0: forever),
    Image encoding or JPEG CompressedImage on <topic>/compressed, header frame_id, QoS."""

    topic: str = "image"
    rate: float = 10.0
    frames: int = 0
    encoding: str = "rgb8"
    compressed: bool = False
    quality: int = 90
    frame_id: str = "camera"
    reliable: bool = False


def encode_messages(images: list[np.ndarray], settings: CameraSettings) -> list:
    """One ready-to-publish message per image, each with its own Header (stamped at publish)."""
    from std_msgs.msg import Header

    from ..ros.conversions import rgb_to_compressed, rgb_to_image

    messages = []
    for image in images:
        header = Header(frame_id=settings.frame_id)
        if settings.compressed:
            messages.append(rgb_to_compressed(image, header, "jpeg", settings.quality))
        else:
            messages.append(rgb_to_image(image, header, settings.encoding))
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
        return (f"segpp-camera: published {self.count} frames on {self.topic} in {span:.1f} s: "
                f"{self.rate():.2f} frames/s (target {target:g})")


def make_camera_node(messages: list, settings: CameraSettings, stats: PublishStats):
    """The segpp_camera node: a timer that stamps and publishes the next message."""
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.task import Future
    from sensor_msgs.msg import CompressedImage, Image

    class CameraNode(Node):
        def __init__(self) -> None:
            super().__init__("segpp_camera")
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=(ReliabilityPolicy.RELIABLE if settings.reliable
                                          else ReliabilityPolicy.BEST_EFFORT))
            if settings.compressed:
                # image_transport's naming, so `-r <topic>:=...` moves the compressed topic too
                topic = self.resolve_topic_name(settings.topic) + "/compressed"
                self.publisher = self.create_publisher(CompressedImage, topic, qos)
            else:
                self.publisher = self.create_publisher(Image, settings.topic, qos)
            stats.topic = self.publisher.topic_name
            self.finished = Future()
            self._index = 0
            self.create_timer(1.0 / settings.rate, self._publish_next)
            self.get_logger().info(f"publishing {len(messages)} images in a loop on {stats.topic} at "
                                   f"{settings.rate:g} Hz ({'compressed' if settings.compressed else settings.encoding})")

        def _publish_next(self) -> None:
            if self.finished.done():
                return
            msg = messages[self._index % len(messages)]
            self._index += 1
            msg.header.stamp = self.get_clock().now().to_msg()
            self.publisher.publish(msg)
            stats.tick()
            if settings.frames and stats.count >= settings.frames:
                self.finished.set_result(True)

    return CameraNode()
