"""Depth in, 3-D out (no ROS): keypoints in metres and labelled points from an aligned depth image.

A depth image registered to the colour camera (RealSense's aligned_depth_to_color, ZED, OAK-D,
Orbbec) comes with its own camera_info. Its pixels map to the colour image's by scale alone
(the same view at another resolution): colour pixel centre u -> depth (u + 0.5) * wd / W - 0.5,
as the label images are resized. Everything 3-D is computed in the depth image's grid and
back-projected with the depth camera's K:

    x = (u - cx) z / fx,   y = (v - cy) z / fy   (metres, the depth camera's optical frame:
                                                  x right, y down, z forward)

- a joint's z is the median of the valid depths in a (2 window + 1)^2 window around it, taken
  from the pixels of that person's mask (person-class labels inside its box) where the window
  holds any, so a hand in front of a wall does not take the wall's depth; NaN without a valid
  depth; x and y back-projected at the joint's own (sub-pixel) position;
- the point cloud: every ``stride``-th depth pixel in both directions with a valid depth within
  ``max_range`` m, its label the label image's at the corresponding pixel, optionally only some
  classes, optionally the class colour; built with array operations only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .pose import PoseResult

# depth encodings (sensor_msgs/Image) and how they read: 16UC1 millimetres, 32FC1 metres
DEPTH_ENCODINGS: dict[str, str] = {"16UC1": "millimetres (uint16, 0 = no reading)",
                                   "mono16": "millimetres (uint16, 0 = no reading)",
                                   "32FC1": "metres (float32, 0 or NaN = no reading)"}
SCALE_TOLERANCE = 0.02      # relative: focal lengths against the image size ratio
CENTRE_TOLERANCE_PX = 2.0   # principal points, in depth pixels


class DepthError(ValueError):
    """A depth image that cannot be used as asked; the message names the problem and the fix."""


def depth_metres(array: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image of ``encoding`` -> float32 metres with NaN where there is no reading."""
    if encoding in ("16UC1", "mono16"):
        out = array.astype(np.float32) / np.float32(1000)   # correctly rounded: 1234 mm is float32(1.234)
        out[array == 0] = np.nan
        return out
    if encoding == "32FC1":
        out = np.array(array, dtype=np.float32, copy=True)
        out[~(out > 0)] = np.nan                      # 0, negative and NaN: no reading
        return out
    raise DepthError(f"depth encoding {encoding!r} is not a depth image: use 16UC1 (millimetres) or 32FC1 "
                     "(metres), e.g. the camera driver's aligned depth topic (aligned_depth_to_color/image_raw)")


@dataclass(frozen=True)
class DepthFrame:
    """A depth image in metres [hd, wd] (NaN: no reading), its camera's K (fx, fy, cx, cy) and
    frame_id, ready for the colour image of ``color_hw``."""

    metres: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    frame_id: str
    color_hw: tuple[int, int]

    @property
    def hw(self) -> tuple[int, int]:
        return self.metres.shape[:2]

    def to_depth(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour-image pixel coordinates -> depth-image ones (pixel centres kept)."""
        (hd, wd), (h, w) = self.hw, self.color_hw
        return (u + 0.5) * (wd / w) - 0.5, (v + 0.5) * (hd / h) - 0.5


def depth_frame(array: np.ndarray, encoding: str, k: Sequence[float], frame_id: str, color_hw: tuple[int, int],
                color_k: Sequence[float] | None = None) -> DepthFrame:
    """A DepthFrame from a depth image, its camera_info's K (9 values, row-major) and frame_id, for
    a colour image of ``color_hw`` with camera_info K ``color_k`` (None: not received).

    A depth image of the colour image's size is taken as registered to it. One of another size
    must show the same view at another resolution, which the two camera_infos decide: each focal
    length scaled by the size ratio (within 2 %), the principal points mapping onto each other
    (within 2 px); anything else is refused with the reason (never silently misaligned)."""
    metres = depth_metres(array, encoding)
    hd, wd = metres.shape[:2]
    fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
    if not (fx > 0 and fy > 0):
        raise DepthError(f"the depth camera_info has no intrinsics (K = {list(k)}): publish the depth camera's "
                         "camera_info beside the depth image")
    h, w = color_hw
    if (hd, wd) != (h, w):
        if color_k is None:
            raise DepthError(f"the depth image is {hd}x{wd} and the colour image {h}x{w}: without the colour "
                             "camera_info the two cannot be related; publish it, or an aligned depth of the colour "
                             "image's size")
        sx, sy = wd / w, hd / h
        cfx, cfy, ccx, ccy = float(color_k[0]), float(color_k[4]), float(color_k[2]), float(color_k[5])
        scaled = (abs(fx - cfx * sx) <= SCALE_TOLERANCE * fx and abs(fy - cfy * sy) <= SCALE_TOLERANCE * fy
                  and abs(cx - ((ccx + 0.5) * sx - 0.5)) <= CENTRE_TOLERANCE_PX
                  and abs(cy - ((ccy + 0.5) * sy - 0.5)) <= CENTRE_TOLERANCE_PX)
        if not scaled:
            raise DepthError(f"the depth image ({hd}x{wd}, fx {fx:g} fy {fy:g} cx {cx:g} cy {cy:g}) is not the "
                             f"colour image ({h}x{w}, fx {cfx:g} fy {cfy:g} cx {ccx:g} cy {ccy:g}) at another "
                             "resolution: the depth must be registered to the colour camera; use the driver's "
                             "aligned depth (e.g. aligned_depth_to_color/image_raw)")
    return DepthFrame(metres, fx, fy, cx, cy, frame_id, (int(h), int(w)))


def labels_at(labels: np.ndarray, depth_hw: tuple[int, int], stride: int = 1) -> np.ndarray:
    """The label (any resolution) at every ``stride``-th depth pixel both ways, nearest pixel
    centre, as the label image is resized (a view when the sizes agree)."""
    hd, wd = depth_hw
    hl, wl = labels.shape
    if (hl, wl) == (hd, wd):
        return labels[::stride, ::stride]
    rows, cols = np.arange(0, hd, stride), np.arange(0, wd, stride)
    lr = np.clip(np.rint((rows + 0.5) * (hl / hd) - 0.5), 0, hl - 1).astype(np.intp)
    lc = np.clip(np.rint((cols + 0.5) * (wl / wd) - 0.5), 0, wl - 1).astype(np.intp)
    return labels[np.ix_(lr, lc)]


def box_window(box: np.ndarray, depth: "DepthFrame") -> tuple[slice, slice]:
    """The depth pixels of a colour-image box [x0, y0, x1, y1] (rows, cols)."""
    x0, y0 = depth.to_depth(np.float64(box[0]), np.float64(box[1]))
    x1, y1 = depth.to_depth(np.float64(box[2]), np.float64(box[3]))
    return (slice(max(int(np.floor(y0)), 0), max(int(np.ceil(y1)) + 1, 0)),
            slice(max(int(np.floor(x0)), 0), max(int(np.ceil(x1)) + 1, 0)))


@dataclass
class Person3D:
    """One person's joints in metres [K, 4] (x, y, z, score; NaN where no valid depth), with the
    track id and score of its 2-D person."""

    track_id: int
    score: float
    keypoints: np.ndarray


def keypoints_3d(pose: PoseResult, depth: DepthFrame, labels: np.ndarray | None, person_ids: Sequence[int],
                 window: int = 3) -> list[Person3D]:
    """Each person's joints back-projected (see the module docstring): z the median valid depth of
    the (2 window + 1)^2 depth pixels around the joint, from the person's mask there when it has
    any (``labels`` None: no mask)."""
    hd, wd = depth.hw
    persons = np.isin(labels_at(labels, depth.hw), np.asarray(person_ids)) if labels is not None else None
    out = []
    for person in pose.persons:
        kp = person.keypoints
        ud, vd = depth.to_depth(kp[:, 0].astype(np.float64), kp[:, 1].astype(np.float64))
        box_rows, box_cols = box_window(person.box, depth)
        z = np.full(len(kp), np.nan, np.float32)
        for j, (u, v) in enumerate(zip(ud, vd)):
            r, c = int(round(v)), int(round(u))
            r0, r1, c0, c1 = max(r - window, 0), min(r + window + 1, hd), max(c - window, 0), min(c + window + 1, wd)
            if r0 >= r1 or c0 >= c1:
                continue                                    # the joint lies outside the depth image
            values = depth.metres[r0:r1, c0:c1]
            if persons is not None:
                # the person's pixels: person labels inside its box (the window's part of it)
                in_box = (((box_rows.start <= np.arange(r0, r1)) & (np.arange(r0, r1) < box_rows.stop))[:, None]
                          & ((box_cols.start <= np.arange(c0, c1)) & (np.arange(c0, c1) < box_cols.stop))[None, :])
                own = persons[r0:r1, c0:c1] & in_box & ~np.isnan(values)
                if own.any():
                    z[j] = np.median(values[own])
                    continue
            valid = values[~np.isnan(values)]
            if valid.size:
                z[j] = np.median(valid)
        x = ((ud - depth.cx) * z / depth.fx).astype(np.float32)
        y = ((vd - depth.cy) * z / depth.fy).astype(np.float32)
        out.append(Person3D(int(person.track_id), float(person.score),
                            np.stack([x, y, z, kp[:, 2].astype(np.float32)], axis=1)))
    return out


def labelled_points(labels: np.ndarray, depth: DepthFrame, stride: int = 4, max_range: float = 10.0,
                    classes: Sequence[int] | None = None,
                    palette: np.ndarray | None = None) -> np.ndarray:
    """The labelled point cloud: a structured array of x, y, z (float32, metres, the depth camera's
    frame), label (uint16) and, with ``palette`` [C, 3], rgb (float32 holding 0x00RRGGBB, PCL's
    packing) -- every ``stride``-th depth pixel with a valid depth <= ``max_range``, of the
    ``classes`` only when given. Array operations only."""
    hd, wd = depth.hw
    rows = np.arange(0, hd, stride)
    cols = np.arange(0, wd, stride)
    z = depth.metres[::stride, ::stride]           # a view: slicing, not a gather
    label = labels_at(labels, depth.hw, stride)
    keep = z <= max_range                          # NaN compares False: no reading is dropped here
    if classes is not None:
        keep &= np.isin(label, np.asarray(list(classes)))
    r, c = np.divmod(np.flatnonzero(keep), len(cols))
    zk = z[r, c]
    fields = [("x", np.float32), ("y", np.float32), ("z", np.float32), ("label", np.uint16)]
    if palette is not None:
        fields.append(("rgb", np.float32))
    cloud = np.empty(zk.size, dtype=fields)
    cloud["x"] = (cols[c] - depth.cx) * zk / depth.fx
    cloud["y"] = (rows[r] - depth.cy) * zk / depth.fy
    cloud["z"] = zk
    lab = label[r, c]
    cloud["label"] = lab
    if palette is not None:
        rgb = palette[np.clip(lab, 0, len(palette) - 1)].astype(np.uint32)
        cloud["rgb"] = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)
    return cloud
