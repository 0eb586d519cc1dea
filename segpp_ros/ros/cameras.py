"""The cameras of the segpp node: one input and one set of outputs each, one model for all.

With the ``cameras`` parameter empty the node has one unnamed camera: inputs ``image`` (or
``image/compressed``), ``camera_info`` (the image topic's sibling) and ``detections``, outputs
``~/label``, ``~/color``, ``~/camera_info``, ... as always. With ``cameras: [front, rear]`` each
named camera has its inputs ``front/image``, ... (relative, so namespaces and remapping work) and
its outputs ``~/front/label``, ``~/front/keypoints``, ...; ``~/label_info``, ``~/palette`` and
``~/keypoint_info`` stay shared, since one model serves them all. No rclpy here: the node
creates the subscriptions and publishers and keeps them on the Camera.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .health import Health
from .realtime import ByStamp, Counters, Window

# a ROS name token: what may stand between two slashes of a topic name
NAME_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_camera_names(names: Sequence[str]) -> str | None:
    """Why a ``cameras`` list is unusable (worded to follow the parameter's name), None when fine."""
    seen = set()
    for name in names:
        if not NAME_TOKEN.fullmatch(name):
            return (f"names the camera {name!r}, which cannot be a topic name part: use letters, digits and "
                    "underscores, starting with a letter (e.g. front, rear_left)")
        if name in seen:
            return f"names the camera {name!r} twice: each camera needs a name of its own"
        seen.add(name)
    return None


@dataclass(eq=False)
class Camera:
    """One input of the node and what belongs to it: its resolved input topics (image,
    camera_info, detections), its publishers by output name (label, color, overlay, camera_info,
    keypoints, markers, persons), its subscriptions, the recent camera_info and detections by
    stamp, and its own watchdog, latency window and problem counters (the per-camera diagnostics)."""

    name: str                       # "" for the single unnamed camera
    input_topic: str = ""
    info_topic: str = ""
    detections_topic: str = ""
    depth_topic: str = ""
    depth_info_topic: str = ""
    publishers: dict[str, Any] = field(default_factory=dict)
    subscriptions: list[Any] = field(default_factory=list)
    infos: ByStamp = field(default_factory=ByStamp)
    detections: ByStamp = field(default_factory=ByStamp)
    depths: ByStamp = field(default_factory=ByStamp)
    depth_infos: ByStamp = field(default_factory=ByStamp)
    health: Health = field(default_factory=Health)
    latency: Window = field(default_factory=Window)
    counters: Counters = field(default_factory=Counters)

    def input(self, leaf: str = "image") -> str:
        """The relative input topic name: ``image`` or ``front/image``."""
        return f"{self.name}/{leaf}" if self.name else leaf

    def output(self, leaf: str) -> str:
        """The private output topic name: ``~/label`` or ``~/front/label``."""
        return f"~/{self.name}/{leaf}" if self.name else f"~/{leaf}"

    def wants(self, leaf: str) -> bool:
        """Whether anyone subscribes the output ``leaf``."""
        publisher = self.publishers.get(leaf)
        return publisher is not None and publisher.get_subscription_count() > 0
