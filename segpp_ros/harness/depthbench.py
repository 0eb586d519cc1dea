"""What the 3-D outputs cost per frame, and the node's memory with depth at 30 Hz (segpp-depthbench).

Part 1, in this process, the node's own functions on one RGB-D frame: a bundled street picture
at the colour size (720x1280), its labels and keypoints from the embedded models, and a depth
image of each depth size (the same view at that resolution, a synthetic scene: ground plane,
walls and a person-shaped block, 0.5 to 14 m, some pixels without a reading). Per (depth size,
stride), interleaved rounds, medians:

  depth      the depth Image (16UC1) -> metres and intrinsics checked (ros.depth.to_depth_frame)
  points     labelled_points + the PointCloud2 + its serialisation (what publish() copies), with rgb
  keypoints  keypoints_3d of the frame's persons + ~/keypoints_3d and ~/markers_3d + serialisation

The keypoints do not depend on the stride; they are timed in every row so the total is one
frame's.

Part 2, the node process (real rclpy and DDS): colour and depth of the same size with their
camera_infos published at 30 Hz, ~/points, ~/keypoints_3d and ~/markers_3d subscribed, for a
given time; the node's resident memory sampled every few seconds. The node segments far below
30 Hz on a CPU: the frames in between are overwritten, depth images wait in a bounded buffer
per camera (ros.cameras.Camera.depths), so memory must stay flat.

DDS must stay on this host: run it inside an isolated network namespace (tools/netns-run).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..inference.timing import markdown_table, rotated

COLOR_HW = (720, 1280)
COLOR_K = (900.0, 900.0, 639.5, 359.5)      # fx, fy, cx, cy of the colour camera at COLOR_HW
PARTS = ("depth", "points", "keypoints")


@dataclass
class CostRow:
    depth: str
    stride: int
    points: int
    depth_ms: float
    points_ms: float
    keypoints_ms: float
    total_ms: float
    cloud_mb_per_s: float    # ~/points at 30 Hz


@dataclass
class MemorySample:
    t_s: float
    rss_mb: float
    points: int              # ~/points messages received so far
    keypoints_3d: int


def intrinsics(hw: tuple[int, int]) -> list[float]:
    """K (row-major, 9) of the colour camera's view at the resolution ``hw``."""
    sy, sx = hw[0] / COLOR_HW[0], hw[1] / COLOR_HW[1]
    fx, fy, cx, cy = COLOR_K
    return [fx * sx, 0.0, (cx + 0.5) * sx - 0.5, 0.0, fy * sy, (cy + 0.5) * sy - 0.5, 0.0, 0.0, 1.0]


def synthetic_depth(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Millimetres [h, w] uint16 (0: no reading): a ground plane below the horizon, walls at 8 and
    14 m above it, a person-shaped block at 2 m, 3 % of the pixels without a reading."""
    h, w = hw
    k = intrinsics(hw)
    fy, cy = k[4], k[5]
    rows = np.arange(h, dtype=np.float64)[:, None]
    below = rows - cy
    # a camera 1.2 m above a flat ground: z = 1.2 fy / (v - cy) below the horizon
    ground = np.where(below > 1, 1.2 * fy / np.maximum(below, 1), np.inf)
    metres = np.broadcast_to(ground, (h, w)).copy()
    cols = np.arange(w)
    metres[:, : w // 2] = np.minimum(metres[:, : w // 2], 8.0)
    metres[:, w // 2:] = np.minimum(metres[:, w // 2:], 14.0)
    metres[int(0.3 * h): int(0.9 * h), (cols >= int(0.40 * w)) & (cols < int(0.48 * w))] = 2.0
    mm = np.clip(np.rint(metres * 1000), 0, 65535).astype(np.uint16)
    mm[np.random.default_rng(seed).random((h, w)) < 0.03] = 0
    return mm


def depth_message(mm: np.ndarray, stamp: Any, frame_id: str = "camera_depth_optical_frame") -> Any:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    h, w = mm.shape
    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=h, width=w, encoding="16UC1",
                 step=2 * w, data=mm.tobytes())


def info_message(hw: tuple[int, int], stamp: Any, frame_id: str = "") -> Any:
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    return CameraInfo(header=Header(stamp=stamp, frame_id=frame_id), height=hw[0], width=hw[1], k=intrinsics(hw))


def _frame(picture: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray, list[int], Any, list[str]]:
    """labels [H, W], the pose result, palette, person ids, skeleton and keypoint names of the
    picture at COLOR_HW, from the embedded models."""
    import cv2

    from ..inference import Segmenter
    from ..inference.pose import PoseEstimator, person_boxes, person_class_ids

    image = cv2.resize(picture, COLOR_HW[::-1], interpolation=cv2.INTER_LINEAR)
    seg = Segmenter(None, device="cpu", max_side=512)
    labels = seg(image).labels
    person_ids = person_class_ids("person,rider", seg.classes)
    estimator = PoseEstimator(None, device="cpu")
    pose = estimator(image, person_boxes(labels, person_ids))
    return labels, pose, seg.palette, person_ids, estimator.skeleton, list(estimator.keypoint_names)


def costs(picture: np.ndarray, depth_sizes: Sequence[tuple[int, int]], strides: Sequence[int], warmup: int = 2,
          iters: int = 15, max_range: float = 10.0) -> list[CostRow]:
    """Part 1 (see the module docstring): one row per (depth size, stride)."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from ..inference.depth import keypoints_3d, labelled_points
    from ..ros.depth import keypoints_3d_message, markers_3d_message, points_message, to_depth_frame

    labels, pose, palette, person_ids, skeleton, names = _frame(picture)
    header = Header(stamp=Time(sec=1), frame_id="camera_color_optical_frame")
    color_info = info_message(COLOR_HW, header.stamp)
    rows = []
    for hw in depth_sizes:
        msg, info = depth_message(synthetic_depth(hw), header.stamp), info_message(hw, header.stamp)
        depth = to_depth_frame(msg, info, color_info, COLOR_HW)
        for stride in strides:
            count = [0, 0]      # points, bytes per point

            def points() -> None:
                cloud = labelled_points(labels, depth, stride, max_range, None, palette)
                count[:] = len(cloud), cloud.dtype.itemsize
                serialize_message(points_message(header, depth.frame_id, cloud))

            def keypoints() -> None:
                persons = keypoints_3d(pose, depth, labels, person_ids)
                serialize_message(keypoints_3d_message(header, depth.frame_id, persons))
                serialize_message(markers_3d_message(header, depth.frame_id, persons, skeleton, names, 0.3))

            calls: dict[str, Callable[[], Any]] = {"depth": lambda: to_depth_frame(msg, info, color_info, COLOR_HW),
                                                   "points": points, "keypoints": keypoints}
            times: dict[str, list[float]] = {p: [] for p in PARTS}
            for i in range(warmup + iters):
                for part in rotated(PARTS, i):
                    start = time.perf_counter()
                    calls[part]()
                    if i >= warmup:
                        times[part].append((time.perf_counter() - start) * 1000)
            med = {p: statistics.median(times[p]) for p in PARTS}
            rows.append(CostRow(f"{hw[0]}x{hw[1]}", stride, count[0], round(med["depth"], 2), round(med["points"], 2),
                                round(med["keypoints"], 2), round(sum(med.values()), 2),
                                round(count[0] * count[1] * 30 / 1e6, 1)))
    return rows


def memory(picture: np.ndarray, log_dir: Path, hw: tuple[int, int], seconds: float, every_s: float = 5.0,
           rate_hz: float = 30.0, progress: Callable[[str], None] = print) -> list[MemorySample]:
    """Part 2 (see the module docstring): the node's RSS every ``every_s`` while RGB-D frames of
    ``hw`` (``picture`` resized, the synthetic depth) arrive at ``rate_hz`` for ``seconds``."""
    import cv2
    from rclpy.qos import QoSProfile
    from segpp.msg import PersonKeypoints3DArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from ..ros.conversions import rgb_to_image
    from .graph import NodeProcess, Probe, diagnostics_values

    topics = {"image": "/rgbd/color/image_raw", "depth": "/rgbd/depth/image_raw"}
    params = {"device": "cpu", "threads": 1, "max_side": 512, "warmup_frames": 1, "pose.enable": True,
              "depth.enable": True, "points.stride": 1, "points.color": True}
    node = NodeProcess(log_dir, params, topics)
    probe = Probe("depthbench_probe")
    try:
        pubs = {"image": probe.publisher(Image, topics["image"]), "depth": probe.publisher(Image, topics["depth"]),
                "color_info": probe.publisher(CameraInfo, "/rgbd/color/camera_info"),
                "depth_info": probe.publisher(CameraInfo, "/rgbd/depth/camera_info")}
        counts = {"points": 0, "keypoints_3d": 0}

        def counter(key: str) -> Callable[[float, Any], None]:
            def count(_: float, __: Any) -> None:
                counts[key] += 1
            return count
        probe.subscribe(PointCloud2, "/segpp/points", QoSProfile(depth=2), callback=counter("points"))
        probe.subscribe(PersonKeypoints3DArray, "/segpp/keypoints_3d", QoSProfile(depth=2),
                        callback=counter("keypoints_3d"))
        probe.subscribe(MarkerArray, "/segpp/markers_3d", QoSProfile(depth=2), callback=lambda _, __: None)
        from diagnostic_msgs.msg import DiagnosticArray
        probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        deadline = time.monotonic() + 180
        while diagnostics_values(probe) is None:
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start:\n{node.output()[-3000:]}")
            time.sleep(0.5)
        colour = cv2.resize(picture, hw[::-1], interpolation=cv2.INTER_LINEAR)
        mm = synthetic_depth(hw)
        samples: list[MemorySample] = []
        start = next_sample = time.monotonic()
        frame = 0
        while (now := time.monotonic()) - start < seconds:
            stamp = probe.now_msg()
            pubs["color_info"].publish(info_message(hw, stamp, "camera_color_optical_frame"))
            pubs["depth_info"].publish(info_message(hw, stamp, "camera_depth_optical_frame"))
            pubs["depth"].publish(depth_message(mm, stamp))
            pubs["image"].publish(rgb_to_image(colour, Header(stamp=stamp, frame_id="camera_color_optical_frame")))
            if now >= next_sample:
                samples.append(MemorySample(round(now - start, 1), round(node.rss_mb(), 1), counts["points"],
                                            counts["keypoints_3d"]))
                progress(f"{samples[-1].t_s:6.1f} s  rss {samples[-1].rss_mb:7.1f} MB  points {counts['points']}  "
                         f"keypoints_3d {counts['keypoints_3d']}")
                next_sample += every_s
            frame += 1
            time.sleep(max(0.0, start + frame / rate_hz - time.monotonic()))
        if not node.alive():
            raise RuntimeError(f"the node died:\n{node.output()[-3000:]}")
        samples.append(MemorySample(round(time.monotonic() - start, 1), round(node.rss_mb(), 1), counts["points"],
                                    counts["keypoints_3d"]))
        return samples
    finally:
        probe.close()
        node.stop()


def format_costs(rows: Sequence[CostRow]) -> str:
    return markdown_table(["depth", "stride", "points", "depth ms", "points ms", "keypoints ms", "total ms",
                           "~/points MB/s at 30 Hz"],
                          [[r.depth, str(r.stride), str(r.points), f"{r.depth_ms:.2f}", f"{r.points_ms:.2f}",
                            f"{r.keypoints_ms:.2f}", f"{r.total_ms:.2f}", f"{r.cloud_mb_per_s:.1f}"] for r in rows])


def format_memory(samples: Sequence[MemorySample]) -> str:
    return markdown_table(["t s", "node RSS MB", "~/points received", "~/keypoints_3d received"],
                          [[f"{s.t_s:.0f}", f"{s.rss_mb:.0f}", str(s.points), str(s.keypoints_3d)] for s in samples])
