"""camera_info beside the labels: pairing by stamp, scaling to the label's resolution (no node here).

The node subscribes each camera's camera_info (image_transport's convention: the sibling of the
image topic) and keeps the last few per camera (segpp_ros.ros.realtime.ByStamp). A frame takes the one with its own header stamp;
when none has it (a driver that stamps them apart), the latest, and that is counted. The
~/camera_info that goes out with a label has the label's header, width and height, and K, P and
the ROI scaled to the label's resolution as image_proc's resize scales them (binning, D, R kept),
with one difference: the principal point maps pixel centres as the labels were resized
(bilinear, align_corners False: x' = (x + 0.5) s - 0.5), where image_proc's x' = x s is half a
pixel of the output off at scale 1/2.
"""
from __future__ import annotations

import copy
from typing import Any

def scaled(info: Any, header: Any, image_hw: tuple[int, int], label_hw: tuple[int, int]) -> Any:
    """A copy of ``info`` for a label of label_hw made from an image of image_hw: the label's
    header, width and height; fx and Tx (K[0]; P[0], P[3]) times the width ratio sx, fy (K[4], P[5])
    times the height ratio sy, the principal point (K[2], K[5]; P[2], P[6]) mapped as a pixel
    centre, c' = (c + 0.5) s - 0.5, the ROI scaled."""
    out = copy.deepcopy(info)
    out.header = header
    sy, sx = label_hw[0] / image_hw[0], label_hw[1] / image_hw[1]
    out.height, out.width = int(label_hw[0]), int(label_hw[1])
    if (sx, sy) != (1.0, 1.0):
        k, p = list(out.k), list(out.p)
        k[0], k[2], k[4], k[5] = k[0] * sx, (k[2] + 0.5) * sx - 0.5, k[4] * sy, (k[5] + 0.5) * sy - 0.5
        p[0], p[2], p[3] = p[0] * sx, (p[2] + 0.5) * sx - 0.5, p[3] * sx
        p[5], p[6] = p[5] * sy, (p[6] + 0.5) * sy - 0.5
        out.k, out.p = k, p
        roi = out.roi
        roi.x_offset, roi.width = int(round(roi.x_offset * sx)), int(round(roi.width * sx))
        roi.y_offset, roi.height = int(round(roi.y_offset * sy)), int(round(roi.height * sy))
    return out
