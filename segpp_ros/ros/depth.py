"""The node's depth input and its 3-D outputs: ~/keypoints_3d, ~/markers_3d and ~/points.

With ``depth.enable`` each camera also subscribes ``depth`` (its remappable name; ``front/depth``
with named cameras) and the depth's camera_info, the sibling of the depth topic
(depth:=/camera/aligned_depth_to_color/image_raw -> /camera/aligned_depth_to_color/camera_info)
unless ``depth_camera_info`` is remapped itself. The segmentation thread pairs each labelled
frame with the depth image nearest its stamp, within ``depth.max_skew_ms`` (waiting a few ms for
one that trails the colour image while depth keeps pairing), turns it into metres in the depth
camera's frame (segpp_ros.inference.depth) and publishes ~/points when subscribed; the pose
thread back-projects the keypoints (~/keypoints_3d, ~/markers_3d). A frame without depth keeps
its 2-D outputs (counted: depth_missing); a depth image that cannot be used (encoding, size,
intrinsics) is refused with the reason (depth_refused, logged), the 2-D outputs go on.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from segpp.msg import Keypoint3D, PersonKeypoints3D, PersonKeypoints3DArray
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..inference.depth import DepthError, DepthFrame, Person3D, depth_frame, depth_metres
from ..inference.drawing import limb_colour
from .realtime import stamp_ns

DEPTH = "depth"                  # Frame.extras key of the frame's DepthFrame
DEPTH_LATE_S = 0.05              # how long a labelled frame may wait for its depth image
MARKER_3D_NS = "segpp_pose_3d"
# numpy field types -> PointField datatypes
_POINT_TYPES = {np.dtype(np.float32): PointField.FLOAT32, np.dtype(np.uint16): PointField.UINT16}


_DEPTH_TYPES = {"16UC1": np.dtype(np.uint16), "mono16": np.dtype(np.uint16), "32FC1": np.dtype(np.float32)}


def depth_array(msg: Any) -> np.ndarray:
    """A depth sensor_msgs/Image as its values [H, W] (uint16 or float32, a view over the data when
    the byte order is the host's); DepthError names a bad encoding or a short buffer."""
    dtype = _DEPTH_TYPES.get(msg.encoding)
    if dtype is None:
        depth_metres(np.zeros((1, 1), np.uint8), msg.encoding)       # raises the encoding's DepthError
    h, w, step = msg.height, msg.width, msg.step
    if h == 0 or w == 0 or step < w * dtype.itemsize or len(msg.data) < step * (h - 1) + w * dtype.itemsize:
        raise DepthError(f"the depth image's header ({w}x{h}, step {step}, {msg.encoding}) does not match its "
                         f"{len(msg.data)} bytes of data: the publisher must set width, height and step")
    order = ">" if msg.is_bigendian else "<"
    buf = np.frombuffer(msg.data, np.uint8)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, w * dtype.itemsize), strides=(step, 1))
    return np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)


def to_depth_frame(msg: Any, info: Any, color_info: Any, color_hw: tuple[int, int]) -> DepthFrame:
    """A depth Image and its camera_info -> DepthFrame for a colour image of ``color_hw`` (its
    camera_info ``color_info``, None when not received); DepthError names what is wrong."""
    if info is None:
        raise DepthError("no camera_info for the depth image has arrived: the depth camera's intrinsics are needed "
                         "to place its pixels in metres; publish it beside the depth image")
    array = depth_array(msg)
    return depth_frame(array, msg.encoding, info.k, msg.header.frame_id or info.header.frame_id, color_hw,
                       color_info.k if color_info is not None else None)


def keypoints_3d_message(header: Any, frame_id: str, persons: Sequence[Person3D]) -> PersonKeypoints3DArray:
    """~/keypoints_3d: the image's stamp, the depth's frame_id; per person K joints (NaN kept)."""
    out = PersonKeypoints3DArray(header=Header(stamp=header.stamp, frame_id=frame_id))
    out.persons = [PersonKeypoints3D(track_id=p.track_id, score=p.score, keypoints=[
        Keypoint3D(x=float(x), y=float(y), z=float(z), score=float(s)) for x, y, z, s in p.keypoints])
        for p in persons]
    return out


def markers_3d_message(header: Any, frame_id: str, persons: Sequence[Person3D], skeleton: Sequence[tuple[int, int]],
                       names: Sequence[str], threshold: float) -> MarkerArray:
    """Skeletons in 3-D for RViz: a DELETEALL, then per person (track id t) a SPHERE_LIST of its
    joints with a depth (id 2t) and a LINE_LIST of the limbs whose two ends have one (id 2t + 1),
    joints scoring >= ``threshold``."""
    header = Header(stamp=header.stamp, frame_id=frame_id)
    markers = [Marker(header=header, ns=MARKER_3D_NS, action=Marker.DELETEALL)]
    for p in persons:
        kp = p.keypoints
        ok = (kp[:, 3] >= threshold) & np.isfinite(kp[:, 2])
        xyz = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in kp[:, :3]]
        joints = Marker(header=header, ns=MARKER_3D_NS, id=2 * p.track_id, type=Marker.SPHERE_LIST,
                        action=Marker.ADD, lifetime=Duration(sec=1))
        joints.pose.orientation.w = 1.0
        joints.scale.x = joints.scale.y = joints.scale.z = 0.05
        joints.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        joints.points = [xyz[k] for k in np.flatnonzero(ok)]
        limbs = Marker(header=header, ns=MARKER_3D_NS, id=2 * p.track_id + 1, type=Marker.LINE_LIST,
                       action=Marker.ADD, lifetime=Duration(sec=1))
        limbs.pose.orientation.w = 1.0
        limbs.scale.x = 0.02
        for a, b in skeleton:
            if ok[a] and ok[b]:
                r, g, bl = limb_colour(a, b, names)
                limbs.points += [xyz[a], xyz[b]]
                limbs.colors += [ColorRGBA(r=r / 255, g=g / 255, b=bl / 255, a=1.0)] * 2
        markers += [joints, limbs]
    return MarkerArray(markers=markers)


def points_message(header: Any, frame_id: str, cloud: np.ndarray) -> PointCloud2:
    """~/points from labelled_points' structured array: one unordered row (height 1), the fields
    of the array in its order, its bytes as they are (no per-point Python)."""
    fields, offset = [], 0
    for name in cloud.dtype.names:
        dtype = cloud.dtype.fields[name][0]
        fields.append(PointField(name=name, offset=cloud.dtype.fields[name][1], datatype=_POINT_TYPES[dtype], count=1))
        offset += dtype.itemsize
    msg = PointCloud2(header=Header(stamp=header.stamp, frame_id=frame_id), height=1, width=len(cloud),
                      fields=fields, is_bigendian=False, point_step=cloud.dtype.itemsize,
                      row_step=cloud.dtype.itemsize * len(cloud), is_dense=True)
    # one memcpy into the message's own array('B'): assigning a NumPy array to msg.data converts
    # it byte by byte (0.55 s for the 600k points of a 720p cloud)
    msg.data.frombytes(memoryview(np.ascontiguousarray(cloud).view(np.uint8)).cast("B"))
    return msg


def labelled_cloud(labels: np.ndarray, depth: DepthFrame, values: Any, classes: Sequence[str],
                   palette: np.ndarray) -> np.ndarray:
    """labelled_points with the points.* parameters of ``values`` (the node's and segpp-bag's)."""
    from ..inference.depth import labelled_points
    from ..inference.pose import person_class_ids

    wanted = values["points.classes"].strip()
    return labelled_points(labels, depth, values["points.stride"], values["points.max_range_m"],
                           person_class_ids(wanted, classes) if wanted else None,
                           palette if values["points.color"] else None)


class DepthOutput:
    """The depth part of the node (owned by SegppNode, active with depth.enable): per camera the
    depth subscriptions and the 3-D publishers; on the segmentation thread the pairing and
    ~/points, on the pose thread ~/keypoints_3d and ~/markers_3d."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def configure(self, camera: Any) -> None:
        """A camera's depth topics (resolved) and 3-D publishers."""
        node = self.node
        camera.depth_topic = node.resolve_topic_name(camera.input("depth"))
        camera.depth_info_topic = node.sibling_info_topic(camera, "depth", "depth_camera_info")
        camera.publishers["keypoints_3d"] = node.publisher(PersonKeypoints3DArray, camera.output("keypoints_3d"))
        camera.publishers["markers_3d"] = node.publisher(MarkerArray, camera.output("markers_3d"))
        camera.publishers["points"] = node.publisher(PointCloud2, camera.output("points"))

    def subscriptions(self, camera: Any) -> list[Any]:
        from sensor_msgs.msg import CameraInfo, Image

        node = self.node
        return [node.subscription(Image, camera.depth_topic, lambda msg: camera.depths.put(stamp_ns(msg.header), msg)),
                node.subscription(CameraInfo, camera.depth_info_topic,
                                  lambda msg: camera.depth_infos.put(stamp_ns(msg.header), msg))]

    def attach(self, decoded: Any, result: Any, values: Any, classes: Sequence[str], palette: np.ndarray) -> None:
        """The frame's depth (nearest stamp within depth.max_skew_ms) as a DepthFrame in its extras,
        and ~/points when subscribed; counted and logged when missing or refused."""
        node, camera = self.node, decoded.frame.camera
        msg = camera.depths.closest(decoded.stamp, int(values["depth.max_skew_ms"] * 1e6), late_s=DEPTH_LATE_S)
        if msg is None:
            self._count(camera, "depth_missing")
            heard = ("none has arrived yet" if camera.depths.received == 0
                     else f"{camera.depths.received} arrived, none within {values['depth.max_skew_ms']:g} ms")
            node.log_throttled(f"depth_missing_{camera.name}", f"no depth image on {camera.depth_topic} for the frame "
                               f"of {camera.input_topic} ({heard}): its 2-D outputs go out without the 3-D ones; "
                               "stamp depth and colour alike, or raise depth.max_skew_ms")
            return
        info, _ = camera.depth_infos.match(stamp_ns(msg.header))
        color_info, _ = camera.infos.match(decoded.stamp)
        try:
            depth = to_depth_frame(msg, info, color_info, decoded.image.shape[:2])
        except DepthError as err:
            self._count(camera, "depth_refused")
            # one line per kind of problem (its first words) every few seconds
            node.log_throttled(f"depth_refused_{camera.name}_{str(err)[:24]}",
                               f"depth image on {camera.depth_topic} refused: {err}")
            return
        result.frame.extras[DEPTH] = depth
        if camera.wants("points"):
            cloud = labelled_cloud(result.labels, depth, values, classes, palette)
            node.counters.bump("rendered_points")
            node.publish(camera.publishers["points"], lambda: points_message(decoded.header, depth.frame_id, cloud))

    def publish_3d(self, result: Any, header: Any, values: Any, skeleton: Sequence[tuple[int, int]],
                   names: Sequence[str], person_ids: Sequence[int]) -> None:
        """~/keypoints_3d (and ~/markers_3d when subscribed) of a frame with depth and keypoints."""
        from ..inference.depth import keypoints_3d

        depth = result.frame.extras.get(DEPTH)
        if depth is None or result.pose is None:
            return
        camera = result.frame.context.frame.camera
        persons = keypoints_3d(result.pose, depth, result.labels, person_ids)
        self.node.publish(camera.publishers["keypoints_3d"],
                          lambda: keypoints_3d_message(header, depth.frame_id, persons))
        if camera.wants("markers_3d"):
            self.node.publish(camera.publishers["markers_3d"], lambda: markers_3d_message(
                header, depth.frame_id, persons, skeleton, names, values["pose.score_threshold"]))

    def _count(self, camera: Any, key: str) -> None:
        self.node.counters.bump(key)
        camera.counters.bump(key)
