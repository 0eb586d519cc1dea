"""Top-down human keypoints: person boxes from segmentation labels, then pose per box (torch, no ROS).

The pipeline of the node: the segmentation's person pixels give boxes (``person_boxes``; or
``whole_frame_box`` without segmentation), each box is cropped to the pose model's input
(``box_to_affine`` + ``warp_crop`` of ``segpp_ros.inference.crops``), all crops go through the network
in one batch, and the decoded keypoints are mapped back into image pixels. Image, label and
crop coordinates all put pixel centres at integers (see ``segpp_ros.inference.crops``).

Flip test (``flip_test=True``): the mirrored crops join the same batch; their heatmaps are
mirrored back and their left/right channels swapped (the checkpoint's flip pairs). A mirrored
heatmap is not aligned with the direct one: with input width W, stride s and heatmap width w_h,
an input x sits at heatmap u = x / s; the mirrored input puts it at (W - 1 - x) / s, and
mirroring the heatmap (i -> w_h - 1 - i) moves that to w_h - 1 - (W - 1 - x) / s = u - c / s,
with c = (W - 1) - s (w_h - 1) input px (``flip_correction``; s - 1 = 3 px for W = 192, s = 4).
Rather than resampling the mirrored heatmap by a fraction of a pixel, both heatmaps are decoded
and c is added to the mirrored x, which is exact for any peak shape; the two estimates (and
scores) are then averaged. On two sets of 128 held-out crops with the embedded B0 model this
beat averaging the heatmaps (decoded x + c / 2, exact only for two equal peaks) by 1.2 and 2.5
points of PCK@0.1 (63.8 / 63.6 against 62.6 / 61.2; no flip test: 62.1 / 60.8).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from ..model import MergeConfig, SegFormerPP
from ..model.checkpoint import CheckpointError
from .crops import box_to_affine, invert_affine, transform_points, warp_crop, warp_crops_torch
from .keypoints import decode_heatmaps
from .loader import PRECISION_WORDS, backend_precisions, load_for_inference, model_forward, precision_name
from .preprocess import PinnedUploads, normalise, to_tensor, upload
from .graphs import after_call
from .timing import DeviceTimer, on_stream
from .vocab import COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON

__all__ = ["PersonBox", "PersonPose", "PoseResult", "PoseEstimator", "person_boxes", "person_class_ids",
           "whole_frame_box",
           "flip_correction", "HEATMAP_STRIDE", "DEFAULT_INPUT_SIZE"]

HEATMAP_STRIDE = 4                      # SegFormer heads predict at a quarter of the input resolution
DEFAULT_INPUT_SIZE = (256, 192)         # (h, w) for checkpoints without an input_size in their metadata
REFINES = ("dark", "quarter", "none")


# --------------------------------------------------------------------------- person boxes

@dataclass
class PersonBox:
    """A person found in a frame.

    box:         [4] float32 x0, y0, x1, y1 in image px, the extreme pixel centres of the person
                 (pixel-centre convention of ``segpp_ros.inference.crops``).
    score:       1.0 for the whole frame; for segmentation boxes the fraction of the box covered
                 by person pixels; for a detector's boxes its score.
    instance_id: index of this (merged) connected component in the frame's list, largest first
                 (>= 0), or of the detection in the detector's message; -1 for the whole frame.
    area:        person pixels, in image px (whole frame: h * w).
    """

    box: np.ndarray
    score: float
    instance_id: int
    area: int


def whole_frame_box(height: int, width: int) -> PersonBox:
    """The whole image as one person box (no segmentation): [0, 0, w - 1, h - 1]."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    return PersonBox(np.array([0, 0, width - 1, height - 1], np.float32), 1.0, -1, int(height) * int(width))


def _merge_close_boxes(boxes: np.ndarray, areas: np.ndarray, gap: float, sx: float,
                       sy: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge boxes [n, 4] (inclusive label px x0, y0, x1, y1) whose gap is at most ``gap`` image
    px, and the merged boxes again, until no two are that close; areas [n] are summed.

    The gap of two boxes is the larger of their empty column and row counts (scaled to image px),
    0 when they overlap or touch. Merging only grows boxes, so the final grouping does not depend
    on the order of the merges. Each round finds every close pair at once ([n, n] arrays) and
    merges the connected groups, so n components cost a few vectorised rounds, not n^3 steps.
    Groups keep the position of their first member.
    """
    while len(boxes) > 1:
        gx = np.maximum(boxes[None, :, 0] - boxes[:, None, 2], boxes[:, None, 0] - boxes[None, :, 2]) - 1
        gy = np.maximum(boxes[None, :, 1] - boxes[:, None, 3], boxes[:, None, 1] - boxes[None, :, 3]) - 1
        close = np.maximum(np.maximum(gx * sx, gy * sy), 0.0) <= gap
        np.fill_diagonal(close, False)
        if not close.any():
            break
        # connected groups of the "close" graph: each node takes the smallest label among its
        # neighbours, then follows its label's label (pointer jumping), until nothing changes
        label = np.arange(len(boxes))
        while True:
            spread = np.minimum(label, np.where(close, label[None, :], len(boxes)).min(axis=1))
            spread = spread[spread]
            if np.array_equal(spread, label):
                break
            label = spread
        groups, first = np.unique(label, return_index=True)
        order = np.argsort(first)                                   # by first member
        slot = np.empty(len(boxes), np.int64)
        slot[groups[order]] = np.arange(len(groups))
        slot = slot[label]
        merged = np.empty((len(groups), 4), np.int64)
        merged[:, :2] = np.iinfo(np.int64).max
        merged[:, 2:] = np.iinfo(np.int64).min
        np.minimum.at(merged[:, 0], slot, boxes[:, 0])
        np.minimum.at(merged[:, 1], slot, boxes[:, 1])
        np.maximum.at(merged[:, 2], slot, boxes[:, 2])
        np.maximum.at(merged[:, 3], slot, boxes[:, 3])
        summed = np.zeros(len(groups), np.int64)
        np.add.at(summed, slot, areas)
        boxes, areas = merged, summed
    return boxes, areas


def person_class_ids(spec: str, classes: Sequence[str]) -> list[int]:
    """'person,rider' or '11,12' (names or IDs, comma-separated) -> class IDs of a segmentation
    model with ``classes``; raises ValueError naming what is unknown and what exists (worded to
    follow the name of the setting, e.g. 'pose.person_classes names ...')."""
    ids = []
    for item in (c.strip() for c in spec.split(",")):
        if not item:
            continue
        if item.isdigit() and int(item) < len(classes):
            ids.append(int(item))
        elif item in classes:
            ids.append(classes.index(item))
        else:
            shown = ", ".join(classes[:24]) + (", ..." if len(classes) > 24 else "")
            raise ValueError(f"names {item!r}, which the segmentation model does not have (its classes: {shown}); "
                             f"use names or IDs 0..{len(classes) - 1}")
    return ids


def person_boxes(labels: np.ndarray, person_ids: Sequence[int] = (11,), min_area: int = 400,
                 merge_gap: float = 0.0, scale: tuple[float, float] = (1.0, 1.0)) -> list[PersonBox]:
    """Person boxes from a label image [H, W] (class ids, e.g. Cityscapes train ids: person 11,
    rider 12), largest area first.

    - Connected components (8-connectivity) of the pixels whose label is in ``person_ids``
      (components of different ids that touch are one component).
    - Components with ``area < min_area`` image px are dropped (specks of misclassified pixels
      never grow a box).
    - Components whose boxes are at most ``merge_gap`` image px apart (the empty rows/columns
      between the boxes; overlapping or touching boxes are 0 apart) are merged into one person,
      repeated until no pair qualifies. So the default 0.0 merges components with overlapping
      or touching boxes (a person cut in two by a pole or an occluder in front); a negative
      ``merge_gap`` disables merging.
    - ``scale`` (sx, sy) maps label px to image px when the labels are at network resolution:
      pixel centres map to pixel centres, x_img = (x + 0.5) * sx - 0.5; areas scale by sx * sy.
      min_area, merge_gap, the boxes and the areas are all in image px.

    box: the extreme pixel centres of the component [xmin, ymin, xmax, ymax] (mapped by
    ``scale``); score: its area over its box's area (label px, boxes inclusive of their edge
    pixels); instance_id: the position in the returned list.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a label image [H, W], got shape {labels.shape}")
    sx, sy = (float(v) for v in scale)
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale must be positive (sx, sy), got {scale}")
    mask = np.isin(labels, np.asarray(list(person_ids), dtype=np.int64)).astype(np.uint8)
    if not mask.any():
        return []
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:count]                                          # component 0 is the background
    stats = stats[stats[:, cv2.CC_STAT_AREA] * sx * sy >= min_area]
    # [x0, y0, x1, y1] inclusive label px, and pixel counts
    left, top = stats[:, cv2.CC_STAT_LEFT].astype(np.int64), stats[:, cv2.CC_STAT_TOP].astype(np.int64)
    boxes = np.stack([left, top, left + stats[:, cv2.CC_STAT_WIDTH] - 1, top + stats[:, cv2.CC_STAT_HEIGHT] - 1],
                     axis=1)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    if merge_gap >= 0:
        boxes, areas = _merge_close_boxes(boxes, areas, merge_gap, sx, sy)
    found = []
    for box, area in zip(boxes, areas):
        box_area = float((box[2] - box[0] + 1) * (box[3] - box[1] + 1))
        img_box = np.array([(box[0] + 0.5) * sx - 0.5, (box[1] + 0.5) * sy - 0.5,
                            (box[2] + 0.5) * sx - 0.5, (box[3] + 0.5) * sy - 0.5], np.float32)
        found.append(PersonBox(img_box, float(area) / box_area, 0, round(int(area) * sx * sy)))
    # largest first; ties by position (top, then left) so the order is deterministic
    found.sort(key=lambda p: (-p.area, float(p.box[1]), float(p.box[0])))
    for i, p in enumerate(found):
        p.instance_id = i
    return found


# --------------------------------------------------------------------------- pose

@dataclass
class PersonPose:
    """box / score / instance_id of the PersonBox it came from; keypoints [K, 3] float32 (x, y in
    image px, score = heatmap peak), all K in the model's order (no thresholding); track_id: the
    person's id from frame to frame (segpp_ros.inference.tracking; -1 until tracked)."""

    box: np.ndarray
    score: float
    instance_id: int
    keypoints: np.ndarray
    track_id: int = -1


@dataclass
class PoseResult:
    """The persons of one frame (in the order of the boxes given) and timings in ms."""

    persons: list[PersonPose]
    network_ms: float
    total_ms: float


def flip_correction(input_width: int, stride: int = HEATMAP_STRIDE) -> float:
    """Input px to add to x decoded from a mirrored-back heatmap: (W - 1) - s (w_h - 1).

    An input x appears in the mirrored-back heatmap at x - c instead of x (see the module
    docstring); c = s - 1 when the width is a multiple of the stride.
    """
    heat_w = math.ceil(input_width / stride)
    return float((input_width - 1) - stride * (heat_w - 1))


def _flip_permutation(pairs: Sequence[Sequence[int]], k: int) -> list[int]:
    perm = list(range(k))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


class PoseEstimator:
    """A loaded top-down pose model (SegFormerPP, task 'pose') with its crop, batch and decode steps.

    input_size: (h, w) of the crops; None takes the checkpoint's ``input_size`` metadata, else
    (256, 192). padding: box enlargement of the crop (as in training). refine: heatmap decoding
    ('dark', 'quarter' or 'none', see ``segpp_ros.inference.keypoints.decode_heatmaps``).
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "auto",
                 merge: str | MergeConfig | Mapping[str, Any] = "none", input_size: tuple[int, int] | None = None,
                 padding: float = 1.25, flip_test: bool = False, refine: str = "dark", cuda_graphs: bool = True,
                 backend: str = "torch", background_compile: bool = False) -> None:
        if refine not in REFINES:
            raise ValueError(f"refine must be one of {', '.join(REFINES)}, not {refine!r}")
        if not padding > 0:
            raise ValueError(f"padding must be > 0 (1.25: the box plus a quarter), got {padding}")
        self.backend, load_precision, self.precision = backend_precisions(backend, precision, device)
        self.model: SegFormerPP
        self.model, self.device, self.dtype, self.weights = load_for_inference(weights, "pose", device, load_precision)
        if self.backend == "torch":
            self.precision = precision_name(self.dtype)
        k = self.model.num_outputs
        meta_size = self.model.meta.get("input_size")
        size = input_size if input_size is not None else (meta_size or DEFAULT_INPUT_SIZE)
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"input_size must be (height, width), got {size!r}") from None
        if min(h, w) < 32:
            raise ValueError(f"input_size {h}x{w} is too small: both sides must be at least 32 px")
        self.input_size = (h, w)
        self.padding = float(padding)
        self.refine = refine
        coco = k == len(COCO_KEYPOINTS)
        self.keypoint_names: list[str] = list(self.model.keypoints or (COCO_KEYPOINTS if coco else
                                                                       [f"keypoint_{i}" for i in range(k)]))
        skeleton = self.model.skeleton if self.model.skeleton is not None else (COCO_SKELETON if coco else [])
        flips = self.model.flip_pairs if self.model.flip_pairs is not None else (COCO_FLIP_PAIRS if coco else [])
        self.skeleton: list[tuple[int, int]] = [(int(a), int(b)) for a, b in skeleton]
        self.flip_pairs: list[tuple[int, int]] = [(int(a), int(b)) for a, b in flips]
        bad = [p for p in self.skeleton + self.flip_pairs if not (0 <= p[0] < k and 0 <= p[1] < k)]
        if bad:
            raise CheckpointError(f"{self.weights}: its skeleton / flip_pairs metadata name keypoints outside "
                                  f"0..{k - 1}: {bad[:4]}")
        if flip_test and not self.flip_pairs:
            raise ValueError(f"flip_test needs the left/right keypoint pairs, and {self.weights} has no "
                             f"'flip_pairs' metadata (nor {len(COCO_KEYPOINTS)} COCO keypoints to assume them "
                             f"for): use flip_test=False, or save the model with meta['flip_pairs'] "
                             "(segpp_ros.model.save_model)")
        self.flip_test = bool(flip_test)
        self._flip_perm = _flip_permutation(self.flip_pairs, k)
        self.model.set_merge(merge)
        # a CUDA stream of its own: the segmentation thread's work does not wait for this one's
        self._stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self._uploads = PinnedUploads()
        self.forward = model_forward(self.model, self.backend, self.precision, cuda_graphs, background_compile)
        # a CUDA graph for a new input is captured after the call that met it (graphs.py); a
        # frame pipeline defers that until its frame is published (FramePipeline.between_frames)
        self.defer_capture = False
        self.last_cold = False       # the last call ran a new graph key eagerly

    @property
    def num_keypoints(self) -> int:
        return self.model.num_outputs

    def describe(self) -> str:
        """One line for logs: variant, keypoints, input size, precision, flip test."""
        m = self.model
        return (f"SegFormer++ pose MiT-{m.spec.name.upper()} ({m.num_outputs} keypoints, "
                f"{self.input_size[0]}x{self.input_size[1]}, {PRECISION_WORDS[self.precision]}"
                f"{', ' + self.backend if self.backend != 'torch' else ''}{', flip test' if self.flip_test else ''})")

    def set_merge(self, merge: str | MergeConfig | Mapping[str, Any]) -> MergeConfig:
        return self.model.set_merge(merge)

    @torch.inference_mode()
    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalised crops [N, 3, h, w] -> heatmaps [N, K, ceil(h/4), ceil(w/4)] float32 (on the device)."""
        return self.forward(crops.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def crop_keypoints(self, crops: torch.Tensor) -> tuple[np.ndarray, float]:
        """Normalised crops [N, 3, h, w] -> (keypoints [N, K, 3] float32 in crop px, network ms).

        One forward for all crops; with flip test the mirrored crops are appended to the batch.
        """
        n, w = crops.shape[0], crops.shape[-1]
        if self.flip_test:
            crops = torch.cat([crops, crops.flip(-1)])
        timer = DeviceTimer(self.device)
        timer.start()
        maps = self.heatmaps(crops)
        timer.stop()
        if self.flip_test:
            maps = torch.cat([maps[:n], maps[n:].flip(-1)[:, self._flip_perm]])
        kp = decode_heatmaps(maps, stride=HEATMAP_STRIDE, refine=self.refine)   # copies the keypoints back
        if self.flip_test:
            kp[n:, :, 0] += flip_correction(w)       # the mirrored-back peaks sit c px to the left
            kp = (kp[:n] + kp[n:]) * 0.5
        return kp, timer.ms()

    def __call__(self, image: np.ndarray, boxes: Sequence[PersonBox], max_persons: int = 8) -> PoseResult:
        """image [H, W, 3] uint8 RGB and person boxes (largest first) -> keypoints of the first
        max_persons boxes, in image px."""
        return self.batch([(image, boxes)], max_persons)[0]

    def batch(self, frames: Sequence[tuple[np.ndarray, Sequence[PersonBox]]], max_persons: int = 8) -> list[PoseResult]:
        """Several frames (e.g. one per camera), each an image [H, W, 3] uint8 RGB with its person
        boxes (largest first) -> each frame's keypoints of its first max_persons boxes, from one
        forward pass over all their crops; network_ms is the batch's, total_ms the whole call's."""
        start = time.perf_counter()
        for image, _ in frames:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        kept = [list(boxes)[:max(int(max_persons), 0)] for _, boxes in frames]
        affines = [[box_to_affine(b.box, self.input_size, self.padding) for b in boxes] for boxes in kept]
        kp, network_ms = np.zeros((0, 0, 3), np.float32), 0.0
        if any(kept):
            with on_stream(self._stream):
                crops = torch.cat([self._crops(image, a) for (image, _), a in zip(frames, affines) if a])
                kp, network_ms = self.crop_keypoints(crops)
        results, first = [], 0
        for boxes, frame_affines in zip(kept, affines):
            persons = []
            for b, a, k in zip(boxes, frame_affines, kp[first:first + len(boxes)]):
                out = k.astype(np.float32, copy=True)
                out[:, :2] = transform_points(k[:, :2], invert_affine(a))
                persons.append(PersonPose(np.asarray(b.box, np.float32), float(b.score), int(b.instance_id), out))
            first += len(boxes)
            results.append(PoseResult(persons, network_ms if boxes else 0.0, 0.0))
        total_ms = (time.perf_counter() - start) * 1000
        for result in results:
            result.total_ms = total_ms
        after_call(self)
        return results

    def _crops(self, image: np.ndarray, affines: Sequence[np.ndarray]) -> torch.Tensor:
        """The normalised person crops [n, 3, h, w] of one frame."""
        if self.device.type == "cuda":
            # the frame goes up once and is cropped there; black outside, then normalised, as
            # the CPU path's OpenCV crops
            frame = upload(image, self.device, self._uploads).permute(0, 3, 1, 2).float()
            return normalise(warp_crops_torch(frame, np.stack(affines), self.input_size).round()
                             .clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1), self.dtype)
        return to_tensor(np.stack([warp_crop(image, a, self.input_size) for a in affines]), self.device, self.dtype)
