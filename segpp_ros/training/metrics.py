"""Accuracy metrics: confusion-matrix mIoU for segmentation, PCK for keypoints (numpy only)."""
from __future__ import annotations

import numpy as np

from .data.classes import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """[C, C] int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` pixels skipped.

    pred, target: integer arrays of the same shape.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    valid = target != ignore_index
    t = target[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if t.size and (t.max() >= num_classes or p.max() >= num_classes or p.min() < 0):
        raise ValueError(f"class ids must be in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """[C] IoU; NaN for classes absent from both ground truth and prediction."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """mIoU in percent over the classes that occur in the ground truth (Cityscapes-style
    evaluation ignores classes a data set never contains)."""
    present = conf.sum(1) > 0
    if not present.any():
        return float("nan")
    return float(100.0 * np.nanmean(iou_per_class(conf)[present]))


def pck(pred: np.ndarray, target: np.ndarray, boxes: np.ndarray, alpha: float) -> float:
    """Percentage of labelled keypoints within ``alpha * max(box width, box height)`` of the truth.

    pred: [N, K, >=2] (x, y, ...) ; target: [N, K, 3] (x, y, v), v > 0 counts (occluded joints
    are labelled too); boxes: [N, 4] x0, y0, x1, y1 in the same pixel frame.
    """
    labelled = target[..., 2] > 0
    if not labelled.any():
        return float("nan")
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    dist = np.linalg.norm(pred[..., :2] - target[..., :2], axis=-1)
    return float(100.0 * (dist[labelled] <= (alpha * size).repeat(target.shape[1], 1)[labelled]).mean())


def keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """[N, K, 3] (x, y, v) -> [N, 4] box of each person's labelled (v > 0) joints.

    PCK's normaliser where no person box is at hand (top-down crops): the extent of the
    ground-truth skeleton itself. Persons without labelled joints get an empty box.
    """
    boxes = np.zeros((len(keypoints), 4), np.float64)
    for i, kp in enumerate(keypoints):
        pts = kp[kp[:, 2] > 0, :2]
        if len(pts):
            boxes[i] = [*pts.min(0), *pts.max(0)]
    return boxes
