"""ROS messages of the pose output: ~/keypoints, ~/keypoint_info and RViz ~/markers.

Pure message building from a PoseResult (segpp_ros.inference.pose); the node only publishes them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from segpp.msg import Keypoint, KeypointInfo, PersonKeypoints, PersonKeypointsArray
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from ..inference.drawing import limb_colour
from ..inference.pose import PoseResult

MARKER_NS = "segpp_pose"


def keypoints_message(header: Any, result: PoseResult) -> PersonKeypointsArray:
    """All persons of one frame, every keypoint kept (index = joint), header copied verbatim."""
    persons = []
    for p in result.persons:
        persons.append(PersonKeypoints(
            box=[float(v) for v in p.box], score=float(p.score), instance_id=int(p.instance_id),
            track_id=int(p.track_id),
            keypoints=[Keypoint(x=float(x), y=float(y), score=float(s)) for x, y, s in p.keypoints]))
    return PersonKeypointsArray(header=header, persons=persons)


def keypoint_info_message(names: Sequence[str], skeleton: Sequence[tuple[int, int]],
                          flip_pairs: Sequence[tuple[int, int]], stamp: Any) -> KeypointInfo:
    msg = KeypointInfo(names=list(names), skeleton=[int(v) for e in skeleton for v in e],
                       flip_pairs=[int(v) for e in flip_pairs for v in e])
    msg.header.stamp = stamp
    return msg


def _rgba(rgb: tuple[int, int, int]) -> ColorRGBA:
    return ColorRGBA(r=rgb[0] / 255, g=rgb[1] / 255, b=rgb[2] / 255, a=1.0)


def markers_message(header: Any, result: PoseResult, skeleton: Sequence[tuple[int, int]], names: Sequence[str],
                    threshold: float, metres_per_px: float) -> MarkerArray:
    """Skeletons for RViz in the image's frame (x right, y down, z = 0, ``metres_per_px`` scale).

    A DELETEALL first, so persons of the previous frame disappear; then per person (track id t)
    a LINE_LIST (edges whose two ends score >= threshold, id 3t), a POINTS marker (joints, id
    3t + 1) and a TEXT_VIEW_FACING marker with the track id above the box (id 3t + 2).
    """
    clear = Marker(header=header, ns=MARKER_NS, action=Marker.DELETEALL)
    markers = [clear]
    width = 3 * metres_per_px
    for p in result.persons:
        kp, track = p.keypoints, 3 * int(p.track_id)
        visible = kp[:, 2] >= threshold
        xyz = [Point(x=float(x) * metres_per_px, y=float(y) * metres_per_px, z=0.0) for x, y in kp[:, :2]]
        lines = Marker(header=header, ns=MARKER_NS, id=track, type=Marker.LINE_LIST, action=Marker.ADD,
                       lifetime=Duration(sec=1))
        lines.pose.orientation.w = 1.0
        lines.scale.x = width
        for a, b in skeleton:
            if visible[a] and visible[b]:
                lines.points += [xyz[a], xyz[b]]
                lines.colors += [_rgba(limb_colour(a, b, names))] * 2
        joints = Marker(header=header, ns=MARKER_NS, id=track + 1, type=Marker.POINTS, action=Marker.ADD,
                        lifetime=Duration(sec=1))
        joints.pose.orientation.w = 1.0
        joints.scale.x = joints.scale.y = 2 * width
        joints.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        joints.points = [xyz[k] for k in np.flatnonzero(visible)]
        label = Marker(header=header, ns=MARKER_NS, id=track + 2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                       lifetime=Duration(sec=1), text=str(p.track_id))
        label.pose.position.x = float(p.box[0] + p.box[2]) / 2 * metres_per_px
        label.pose.position.y = (float(p.box[1]) - 12) * metres_per_px
        label.pose.orientation.w = 1.0
        label.scale.z = 16 * metres_per_px
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        markers += [lines, joints, label]
    return MarkerArray(markers=markers)
