"""One frame's journey: an image in, everything a frame produces out (no ROS).

Every adapter runs frames through here: the node (which adds threads, the keep-latest slot, QoS
and publishing) and segpp-bag (which adds reading and writing bags). A frame goes through two
steps, each over a batch of frames (one per camera) and each with its own model:

    segment     pre-processing, the segmentation network (its merge step chosen by the latency
                budget), labels at input or network resolution, colours and the overlay when asked
    keypoints   person boxes (from the labels, a detector, or the whole frame), the pose network
                over every person of the batch at once (its merge step from the pose budget), each
                person's track id (one tracker per camera), skeletons drawn on the overlay

The node runs them on two threads, so the keypoints of one frame overlap the segmentation of the
next; segpp-bag runs them back to back (``__call__``). One FrameSettings object drives both: the
node's parameters become one (segpp_ros.ros.params), segpp-bag's options another.

``Frame.extras`` carries what other inputs add to a frame (``"person_boxes"``: a detector's boxes,
list[PersonBox], for box_source 'detections'); ``Frame.context`` what the adapter needs back with
the result (the node: camera and header).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from ..model.merge import MergeConfig, resolve_merge
from .budget import POSE_LADDER, SEG_LADDER, MergeBudget
from .graphs import capture_between_frames
from .drawing import draw_skeletons
from .pose import PersonBox, PoseEstimator, PoseResult, person_boxes, whole_frame_box
from .segmenter import Segmenter, network_size
from .tracking import PersonTracker

BOX_SOURCES: tuple[str, ...] = ("segmentation", "whole_frame", "detections")
PERSON_BOXES = "person_boxes"    # Frame.extras key of a detector's boxes
SEGMENTATION, KEYPOINTS = "segmentation", "keypoints"


@dataclass(frozen=True)
class PoseSettings:
    """The keypoint step: on or off, where person boxes come from (and which components count),
    the crops, the pose model's merging and budget, tracking, and how skeletons are drawn.
    box_source 'detections' takes ``Frame.extras["person_boxes"]``; a frame without them gets the
    segmentation's boxes (``FrameResult.boxes_from`` says which)."""

    enable: bool = True
    box_source: str = "segmentation"
    min_box_area: int = 400
    merge_gap: float = 0.0
    max_persons: int = 8
    padding: float = 1.25
    flip_test: bool = False
    merge: MergeConfig = field(default_factory=lambda: resolve_merge("none"))
    budget_ms: float = 0.0
    score_threshold: float = 0.15
    draw_overlay: bool = True
    track_max_missed: int = 30


@dataclass(frozen=True)
class FrameSettings:
    """Everything that decides what a frame produces. ``max_side``: the network input's longer
    side (None: the image's own); ``output_resolution``: labels at 'input' or 'network' size;
    ``merge`` / ``budget_ms``: the segmentation model's merging and latency budget (0: off);
    ``precompile``: with a compiled backend and the budget on, the first frame of a new input size
    has every step of the budget's ladder compiled (queued, in the background)."""

    max_side: int | None = 1024
    output_resolution: str = "input"
    overlay_alpha: float = 0.5
    merge: MergeConfig = field(default_factory=lambda: resolve_merge("none"))
    budget_ms: float = 0.0
    pose: PoseSettings = field(default_factory=PoseSettings)
    precompile: bool = True


@dataclass(eq=False)
class Frame:
    """One input image [H, W, 3] uint8 RGB and what is wanted of it. ``frame_id``: the header's
    (the hooks see it); ``camera``: which camera (batches hold one frame per camera);
    ``color`` / ``overlay``: whether those images are wanted."""

    image: np.ndarray
    frame_id: str = ""
    camera: Hashable = ""
    color: bool = False
    overlay: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    context: Any = None


@dataclass(eq=False)
class FrameResult:
    """What a frame produced: labels [H, W] (or at network size), colours and overlay [H, W, 3]
    when wanted (the overlay with skeletons once the keypoints ran), the persons' keypoints,
    the merge steps used, and timings in ms (``network_ms``: the segmentation network alone,
    ``model_ms``: the whole segmentation call, ``pose_ms``: the keypoint step)."""

    frame: Frame
    labels: np.ndarray
    color: np.ndarray | None
    overlay: np.ndarray | None
    merge: str
    network_ms: float
    model_ms: float
    pose: PoseResult | None = None
    pose_merge: str = ""
    pose_ms: float = 0.0
    boxes_from: str = ""


@dataclass
class BatchReport:
    """What a step did to its batch: the merge step, whether it met its budget (True without one)."""

    merge: str
    budget_met: bool
    persons: int = 0


class PipelineHooks:
    """The one seam through which a test reaches into running frames (the node's fault
    injection, segpp_ros.harness.faults, overrides these); here every call does nothing.

        frame(frame_id)                  a frame is about to be decoded (called by the adapter)
        stage_start(stage, frame_id)     a model step begins on a batch (its first frame's id)
        stage_end(stage, frame_id, s)    the step's model ran for s seconds
        outgoing(message) -> message     an output is about to leave (called by the adapter)
    """

    def frame(self, frame_id: str) -> None:
        pass

    def stage_start(self, stage: str, frame_id: str) -> None:
        pass

    def stage_end(self, stage: str, frame_id: str, elapsed_s: float) -> None:
        pass

    def outgoing(self, message: Any) -> Any:
        return message


class FramePipeline:
    """The models of a frame's journey and the latency budgets that choose their merge steps.

    ``pose`` may be given later (the node loads it on first use); ``person_ids``: the
    segmentation classes whose pixels are persons (``person_class_ids``).
    """

    def __init__(self, segmenter: Segmenter, pose: PoseEstimator | None = None, person_ids: Sequence[int] = (),
                 hooks: PipelineHooks | None = None) -> None:
        self.segmenter = segmenter
        segmenter.defer_capture = True
        self.pose = pose
        self.person_ids = list(person_ids)
        self.hooks = hooks or PipelineHooks()
        self.budget = MergeBudget(SEG_LADDER)
        self.pose_budget = MergeBudget(POSE_LADDER)
        self.trackers: dict[Hashable, PersonTracker] = {}     # per camera
        self._precompiled: set[Hashable] = set()
        self._warmed: set[Hashable] = set()                   # (network size, batch) warmed on CUDA

    @staticmethod
    def precompile(budget: MergeBudget, model: Any, shape: tuple[int, ...], top: MergeConfig) -> None:
        """Compile every step of ``budget``'s ladder from ``top`` at input ``shape`` for a model
        whose forward pass compiles (a no-op for PyTorch's)."""
        forward = getattr(model.forward, "precompile", None)
        if forward is not None:
            forward(shape, [top if step == top.name else resolve_merge(step)
                            for step in budget.controller.steps(top.name)])

    def network_size(self, image: np.ndarray, settings: FrameSettings) -> tuple[int, int]:
        """The network input size of an image: frames of one size share a batch."""
        return network_size(*image.shape[:2], settings.max_side)

    def __call__(self, frames: Sequence[Frame], settings: FrameSettings) -> list[FrameResult]:
        """Both steps for frames of any sizes (one batch per network size), results in order."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(self.network_size(frame.image, settings), []).append(i)
        results: list[FrameResult | None] = [None] * len(frames)
        for indices in groups.values():
            batch, _ = self.segment([frames[i] for i in indices], settings)
            if settings.pose.enable and self.pose is not None:
                self.keypoints(batch, settings)
            for i, result in zip(indices, batch):
                results[i] = result
        self.between_frames(SEGMENTATION)
        self.between_frames(KEYPOINTS)
        return results  # type: ignore[return-value]

    def reset(self) -> None:
        """Forget what earlier frames taught: person tracks and the latency budgets' measurements
        (a new recording starts as if the pipeline were new; its models stay loaded)."""
        self.trackers.clear()
        self.budget = MergeBudget(SEG_LADDER)
        self.pose_budget = MergeBudget(POSE_LADDER)

    def between_frames(self, step: str) -> None:
        """Capture the CUDA graphs of the new inputs a step met, after its frames are out (the
        node calls it once it has published them, on the step's own thread). The models defer
        their captures to this while they serve a pipeline."""
        model = self.segmenter if step == SEGMENTATION else self.pose
        if model is not None:
            capture_between_frames(model.forward)

    def warm_up(self, settings: FrameSettings, image_hw: tuple[int, int] = (480, 640)) -> None:
        """One pass of each loaded model on a black frame of ``image_hw``: the first forward
        allocates memory and picks kernels. The budgets learn nothing from it."""
        h, w = image_hw
        image = np.zeros((h, w, 3), np.uint8)
        self.segmenter.max_side = settings.max_side
        self.segmenter(image, output=settings.output_resolution)
        self.between_frames(SEGMENTATION)
        if self.pose is not None:
            self.pose(image, [whole_frame_box(h, w)])
            self.between_frames(KEYPOINTS)

    # -- segmentation -------------------------------------------------------------------------------
    def segment(self, frames: Sequence[Frame], settings: FrameSettings) -> tuple[list[FrameResult], BatchReport]:
        """Labels (and the wanted colours and overlays) of frames that share one network input
        size, from one forward pass; each frame's are the ones it gets alone."""
        seg = self.segmenter
        seg.max_side = settings.max_side
        size = self.network_size(frames[0].image, settings)
        # a batch takes longer than one frame: each batch size has costs of its own
        key = size if len(frames) == 1 else (size, len(frames))
        if settings.precompile and settings.budget_ms > 0 and key not in self._precompiled:
            self._precompiled.add(key)
            self.precompile(self.budget, seg, (len(frames), 3, *size), settings.merge)
        merge = self.budget.choose(key, settings.budget_ms, settings.merge)
        if merge is not seg.model.merge:      # a new object: a parameter change or the budget's step
            seg.set_merge(merge)
        overlay = any(f.overlay for f in frames)
        if seg.device.type == "cuda" and (size, len(frames)) not in self._warmed:
            # the first frames of a size (a camera's first): cuDNN's autotuning, the first
            # allocations and the graph capture happen on these frames before they are timed
            self._warmed.add((size, len(frames)))
            seg.batch([f.image for f in frames], output=settings.output_resolution)
            self.between_frames(SEGMENTATION)
        self.hooks.stage_start(SEGMENTATION, frames[0].frame_id)
        start = time.perf_counter()
        made = seg.batch([f.image for f in frames], output=settings.output_resolution,
                         color=any(f.color for f in frames),
                         overlay_alpha=settings.overlay_alpha if overlay else None)
        self.hooks.stage_end(SEGMENTATION, frames[0].frame_id, time.perf_counter() - start)
        elapsed_ms = (time.perf_counter() - start) * 1000
        # a new graph key ran eagerly (its graph is captured between frames): the budget learns
        # graphed times only
        met = self.budget.record(key, merge, elapsed_ms, settings.budget_ms) if not seg.last_cold else True
        results = [FrameResult(f, m.labels, m.color if f.color else None, m.overlay if f.overlay else None,
                               merge.name, m.network_ms, m.total_ms) for f, m in zip(frames, made)]
        return results, BatchReport(merge.name, met)

    # -- keypoints ----------------------------------------------------------------------------------
    def boxes(self, result: FrameResult, settings: PoseSettings) -> list[PersonBox]:
        """The person boxes of a segmented frame, in image px, largest first (sets
        ``result.boxes_from``)."""
        h, w = result.frame.image.shape[:2]
        result.boxes_from = settings.box_source
        if settings.box_source == "whole_frame":
            return [whole_frame_box(h, w)]
        if settings.box_source == "detections":
            detected = result.frame.extras.get(PERSON_BOXES)
            if detected is not None:
                return sorted(detected, key=lambda b: -b.area)
            result.boxes_from = "segmentation"       # no detections for this frame
        labels = result.labels
        scale = (w / labels.shape[1], h / labels.shape[0])
        return person_boxes(labels, self.person_ids, min_area=settings.min_box_area,
                            merge_gap=settings.merge_gap, scale=scale)

    def keypoints(self, results: Sequence[FrameResult], settings: FrameSettings) -> BatchReport:
        """The persons' keypoints of segmented frames (every person of the batch through one
        pose forward pass), set on each result, and their skeletons drawn on its overlay."""
        if self.pose is None:
            raise RuntimeError("the keypoint step needs a pose model: FramePipeline(pose=...)")
        s, pose = settings.pose, self.pose
        pose.defer_capture = True            # given later by the node: captured in between_frames
        boxes = [self.boxes(r, s) for r in results]
        persons = sum(min(len(b), s.max_persons) for b in boxes)
        # the pose model's time grows with the persons in the batch (and doubles with flip_test)
        key = (persons, s.flip_test)
        merge = self.pose_budget.choose(key, s.budget_ms, s.merge)
        if merge is not pose.model.merge:
            pose.set_merge(merge)
        pose.padding, pose.flip_test = s.padding, s.flip_test
        start = time.perf_counter()
        self.hooks.stage_start(KEYPOINTS, results[0].frame.frame_id)
        model_start = time.perf_counter()
        found = pose.batch([(r.frame.image, b) for r, b in zip(results, boxes)], s.max_persons)
        self.hooks.stage_end(KEYPOINTS, results[0].frame.frame_id, time.perf_counter() - model_start)
        model_ms = (time.perf_counter() - model_start) * 1000
        met = not persons or pose.last_cold or self.pose_budget.record(key, merge, model_ms, s.budget_ms)
        for result, keypoints in zip(results, found):
            result.pose, result.pose_merge = keypoints, merge.name
            self.track(result.frame.camera, keypoints, s)
            if result.overlay is not None and s.draw_overlay:
                draw_skeletons(result.overlay, [p.keypoints for p in keypoints.persons], pose.skeleton,
                               pose.keypoint_names, s.score_threshold)
        elapsed = (time.perf_counter() - start) * 1000
        for result in results:
            result.pose_ms = elapsed
        return BatchReport(merge.name, met, persons)

    def track(self, camera: Hashable, found: PoseResult, settings: PoseSettings) -> None:
        """Each person's track id, from the camera's tracker (frames of one camera come in order)."""
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = PersonTracker(settings.track_max_missed)
        tracker.max_missed = settings.track_max_missed
        ids = tracker.update([p.box for p in found.persons], [p.keypoints for p in found.persons])
        for person, track_id in zip(found.persons, ids):
            person.track_id = track_id
