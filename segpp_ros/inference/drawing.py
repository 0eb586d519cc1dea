"""Skeletons drawn onto RGB images (overlay output; numpy + OpenCV, no ROS)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# left limbs orange, right limbs blue, the rest green: readable on street scenes
LEFT, RIGHT, CENTRE = (255, 140, 0), (0, 140, 255), (0, 220, 0)


def limb_colour(a: int, b: int, names: Sequence[str]) -> tuple[int, int, int]:
    """RGB colour of the edge a-b from its keypoint names (left_*/right_*)."""
    sides = {names[i].split("_", 1)[0] for i in (a, b) if i < len(names)}
    if sides == {"left"}:
        return LEFT
    if sides == {"right"}:
        return RIGHT
    return CENTRE


def draw_skeletons(image: np.ndarray, keypoints: Sequence[np.ndarray], skeleton: Sequence[tuple[int, int]],
                   names: Sequence[str], threshold: float) -> np.ndarray:
    """Draw persons' skeletons in place on image [H, W, 3] uint8 RGB and return it.

    keypoints: per person [K, 3] (x, y, score) in image px. An edge is drawn when both ends
    score at least ``threshold``, a joint when it does.
    """
    thickness = max(1, round(min(image.shape[:2]) / 240))
    for kp in keypoints:
        visible = kp[:, 2] >= threshold
        pts = np.round(kp[:, :2]).astype(np.int64)
        for a, b in skeleton:
            if visible[a] and visible[b]:
                cv2.line(image, tuple(map(int, pts[a])), tuple(map(int, pts[b])), limb_colour(a, b, names),
                         thickness, cv2.LINE_AA)
        for k in np.flatnonzero(visible):
            cv2.circle(image, tuple(map(int, pts[k])), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return image
