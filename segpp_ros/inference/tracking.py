"""Persons tracked from frame to frame: a stable id per person, by box and keypoint association (no ROS).

Each camera has its own PersonTracker. A frame's persons (boxes and keypoints, in image px) are
matched to the tracks so far, most similar pair first (greedy; a frame holds a handful of
persons), where the similarity of a track and a person is the larger of

    the IoU of the person's box with the track's predicted box (its last box moved by its
        velocity for every frame since it was seen: persons walking past each other keep going
        their way), and, for a track missed in the last frames, with its last seen box (a person
        who came back where they left);
    half the share of the person's box inside the predicted box (a person cut by the image edge
        or half hidden: a small box inside the track's, whose IoU with it is small);
    the keypoint similarity (OKS-like: exp(-d^2 / (2 s^2 k^2)) over the joints both score
        above ``keypoint_score``, s^2 the box area), which tells apart two persons whose boxes
        overlap while they cross.

Pairs below ``min_similarity`` are never matched. A person without a match starts a new track (ids
count up from 1 and are never reused); a track without a person is kept for ``max_missed``
frames (it may be matched again: someone hidden behind another, or stepping out of view and
back), then dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# per-joint spread of the COCO keypoint similarity (its published sigmas x 2), used for any K
COCO_KAPPA = np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087,
                       .089, .089], np.float32) * 2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes [x0, y0, x1, y1] (inclusive pixel-centre extremes, as PersonBox)."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return float(inter / area)


def inside(box: np.ndarray, outer: np.ndarray) -> float:
    """The share of ``box``'s area inside ``outer`` (both [x0, y0, x1, y1], inclusive)."""
    w = min(box[2], outer[2]) - max(box[0], outer[0]) + 1
    h = min(box[3], outer[3]) - max(box[1], outer[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    return float(w * h / ((box[2] - box[0] + 1) * (box[3] - box[1] + 1)))


def keypoint_similarity(a: np.ndarray, b: np.ndarray, box: np.ndarray, min_score: float) -> float:
    """OKS-like similarity of two keypoint sets [K, 3] (x, y, score) at the scale of ``box``; 0
    when fewer than three joints score above ``min_score`` in both."""
    both = (a[:, 2] >= min_score) & (b[:, 2] >= min_score)
    if both.sum() < 3:
        return 0.0
    kappa = COCO_KAPPA if len(a) == len(COCO_KAPPA) else np.full(len(a), 0.1, np.float32)
    area = max(float((box[2] - box[0] + 1) * (box[3] - box[1] + 1)), 1.0)
    d2 = ((a[both, :2] - b[both, :2]) ** 2).sum(axis=1)
    return float(np.exp(-d2 / (2 * area * kappa[both] ** 2)).mean())


@dataclass
class Track:
    """One tracked person: id, last box and keypoints, box-centre velocity (px per frame), frames
    since last seen, frames matched."""

    id: int
    box: np.ndarray
    keypoints: np.ndarray | None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    missed: int = 0
    hits: int = 1

    def predicted(self) -> np.ndarray:
        shift = self.velocity * (self.missed + 1)
        return self.box + np.array([shift[0], shift[1], shift[0], shift[1]], np.float32)


class PersonTracker:
    """Stable person ids for one camera's frames, in order (see the module docstring)."""

    def __init__(self, max_missed: int = 15, min_similarity: float = 0.1, keypoint_score: float = 0.3,
                 smoothing: float = 0.5) -> None:
        self.max_missed = max_missed
        self.min_similarity = min_similarity
        self.keypoint_score = keypoint_score
        self.smoothing = smoothing        # weight of the newest velocity observation
        self.tracks: list[Track] = []
        self._next_id = 1

    def similarity(self, track: Track, box: np.ndarray, keypoints: np.ndarray | None) -> float:
        predicted = track.predicted()
        s = max(iou(predicted, box), 0.5 * inside(box, predicted))
        if track.missed:
            s = max(s, iou(track.box, box))
        if keypoints is not None and track.keypoints is not None:
            s = max(s, keypoint_similarity(track.keypoints, keypoints, box, self.keypoint_score))
        return s

    def update(self, boxes: Sequence[np.ndarray], keypoints: Sequence[np.ndarray | None] | None = None) -> list[int]:
        """The track id of each of a frame's persons (boxes [4], keypoints [K, 3] or None), in order."""
        keypoints = list(keypoints) if keypoints is not None else [None] * len(boxes)
        boxes = [np.asarray(b, np.float32) for b in boxes]
        pairs = sorted(((self.similarity(t, b, k), ti, pi) for ti, t in enumerate(self.tracks)
                        for pi, (b, k) in enumerate(zip(boxes, keypoints))), key=lambda p: -p[0])
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for score, ti, pi in pairs:
            if score < self.min_similarity:
                break
            if ti in taken or ids[pi] is not None:
                continue
            taken.add(ti)
            track = self.tracks[ti]
            observed = ((boxes[pi][:2] + boxes[pi][2:]) - (track.box[:2] + track.box[2:])) / 2 / (track.missed + 1)
            track.velocity = (1 - self.smoothing) * track.velocity + self.smoothing * observed.astype(np.float32)
            track.box, track.keypoints, track.missed = boxes[pi], keypoints[pi], 0
            track.hits += 1
            ids[pi] = track.id
        for ti, track in enumerate(self.tracks):
            if ti not in taken:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for pi, box in enumerate(boxes):
            if ids[pi] is None:
                self.tracks.append(Track(self._next_id, box, keypoints[pi]))
                ids[pi] = self._next_id
                self._next_id += 1
        return [int(i) for i in ids]  # type: ignore[arg-type]
