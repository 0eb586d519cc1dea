"""A scripted walk for tracking: two persons cross, one leaves the view and comes back (no ROS).

Two person figures, cut out of rendered street scenes with their pixel masks, are pasted onto
another scene whose own persons were painted out, frame after frame:

    A walks left to right, passes in front of B halfway, walks out of the view at the right
    edge and, after ``away`` frames out of sight, comes back in from the right;
    B walks right to left and stops at the left.

Each frame carries each visible figure's true box (inclusive pixel-centre extremes, as
PersonBox) under its identity ('A', 'B'), so the ids a tracker gives can be scored
(``id_switches``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .classes import TRAIN_ID
from .scenes import render_scene

# figures: (seed, instance id) of fully visible persons of rendered 256x512 scenes
FIGURES = ((20_000_000, 1), (20_000_009, 1))
BACKGROUND_SEED = 20_000_030
PERSON_IDS = (TRAIN_ID["person"], TRAIN_ID["rider"])


@dataclass
class WalkFrame:
    """image [H, W, 3] uint8 RGB; boxes: identity -> [4] float32 box of each visible figure (at
    least 30 % of it in view)."""

    image: np.ndarray
    boxes: dict[str, np.ndarray]


def _figure(seed: int, instance: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB [h, w, 3] and mask [h, w] of one rendered person, scaled to ``height`` px."""
    scene = render_scene(seed, 256, 512)
    mask = scene.instances == instance
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    scale = height / (y1 - y0)
    size = (max(1, round((x1 - x0) * scale)), height)
    rgb = cv2.resize(scene.image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) >= 128
    return rgb, alpha


def _background(height: int, width: int) -> np.ndarray:
    """A street with its own persons painted out."""
    scene = render_scene(BACKGROUND_SEED, height, width)
    persons = np.isin(scene.labels, PERSON_IDS).astype(np.uint8)
    persons = cv2.dilate(persons, np.ones((5, 5), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(scene.image), persons, 5, cv2.INPAINT_TELEA)


def _paste(image: np.ndarray, figure: tuple[np.ndarray, np.ndarray], left: int, top: int) -> np.ndarray | None:
    """Paste a figure with its top-left at (left, top); its visible box, or None when less than
    30 % of it is in view."""
    rgb, alpha = figure
    h, w = alpha.shape
    H, W = image.shape[:2]
    x0, x1 = max(left, 0), min(left + w, W)
    y0, y1 = max(top, 0), min(top + h, H)
    if x1 <= x0 or y1 <= y0:
        return None
    region = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
    image[y0:y1, x0:x1][region] = rgb[y0 - top:y1 - top, x0 - left:x1 - left][region]
    ys, xs = np.nonzero(region)
    if len(xs) < 0.3 * alpha.sum():
        return None                     # a sliver at the edge (a hand, a shoulder) is not a visible person
    return np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max(), y0 + ys.max()], np.float32)


def scripted_walk(height: int = 240, width: int = 320, frames: int = 48, away: int = 6) -> list[WalkFrame]:
    """The walk (see the module docstring) at height x width: A crosses in front of B around the
    middle of the first 28 frames, leaves at the right, is out of view ``away`` frames, comes back."""
    figure_h = round(height * 0.55)
    a, b = _figure(*FIGURES[0], figure_h), _figure(*FIGURES[1], figure_h)
    background = _background(height, width)
    top = height - figure_h - round(height * 0.08)
    wb = b[1].shape[1]
    cross = 28                                          # frames of the crossing leg
    step = (width * 0.7) / cross
    out_x = width + 2                                   # A entirely right of the view
    walk = []
    for i in range(frames):
        # A: across, then out at the right, away, then back in from the right
        if i < cross:
            xa = round(width * 0.12 + step * i)
        else:
            exit_frames = max(1, round((out_x - (width * 0.12 + step * cross)) / step))
            j = i - cross
            if j <= exit_frames:
                xa = round(width * 0.12 + step * (cross + j))
            elif j <= exit_frames + away:
                xa = out_x
            else:
                xa = round(out_x - step * (j - exit_frames - away))
        xb = round(max(width * 0.88 - wb - step * i, width * 0.05))
        image = background.copy()
        boxes = {}
        box_b = _paste(image, b, xb, top + 4)           # B a little behind: A passes in front
        box_a = _paste(image, a, xa, top)
        if box_b is not None:
            boxes["B"] = box_b
        if box_a is not None:
            boxes["A"] = box_a
        walk.append(WalkFrame(image, boxes))
    return walk


def match_identities(truth: dict[str, np.ndarray], boxes: list[np.ndarray], min_iou: float = 0.3) -> dict[str, int]:
    """identity -> index into ``boxes`` of the detected box that covers it best (IoU >= min_iou)."""
    from ...inference.tracking import iou

    found = {}
    for name, box in truth.items():
        scores = [iou(box, b) for b in boxes]
        if scores and max(scores) >= min_iou:
            found[name] = int(np.argmax(scores))
    return found


def id_switches(assigned: list[dict[str, int]]) -> int:
    """ID switches (MOT's IDSW): per identity, how often the track id it is given changes from the
    last frame it was given one; ``assigned``: per frame, identity -> track id."""
    last: dict[str, int] = {}
    switches = 0
    for frame in assigned:
        for name, track in frame.items():
            if name in last and last[name] != track:
                switches += 1
            last[name] = track
    return switches
