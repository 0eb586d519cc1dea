"""The pose part of the segpp node: person boxes -> top-down keypoints -> ~/keypoints, ~/markers.

Owned by SegppNode (segpp_ros.ros.node). A pipeline stage of its own: the segmentation thread
hands each labelled frame over (keep-latest, like the camera input) and goes on with the next
frame while this stage's thread computes the keypoints, so persons in view do not lower the
label rate where there are cores (or a GPU) to spare. The parameter checks run on the executor.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from segpp.msg import KeypointInfo, PersonKeypointsArray
from visualization_msgs.msg import MarkerArray

from ..inference.budget import POSE_LADDER, MergeBudget
from ..inference.drawing import draw_skeletons
from ..inference.pose import PoseEstimator, PoseResult, person_boxes, whole_frame_box
from ..model.merge import MergeConfig
from . import faults
from .keypoint_msgs import keypoint_info_message, keypoints_message, markers_message
from .params import Snapshot
from .realtime import SlotWorker, Window


class PoseLoadError(RuntimeError):
    """The pose weights cannot be loaded; the message names the file and the fix."""


def person_class_ids(spec: str, classes: Sequence[str]) -> list[int]:
    """'person,rider' or '11,12' (names or IDs, comma-separated) -> class IDs of the segmentation
    model; raises ValueError naming what is unknown and what exists."""
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
            raise ValueError(f"pose.person_classes names {item!r}, which the segmentation model does not have "
                             f"(its classes: {shown}); use names or IDs 0..{len(classes) - 1}")
    return ids


@dataclass
class PoseItem:
    """One labelled frame: its camera (segpp_ros.ros.cameras), image [H, W, 3] RGB, labels [h, w]
    (input or network resolution), the input header, and whether its ~/overlay is wanted."""

    camera: Any
    image: np.ndarray
    labels: np.ndarray
    header: Any
    overlay: bool


@dataclass
class PoseJob:
    """The frames of one segmentation batch (one per camera) for the pose stage, and the
    parameter snapshot they were segmented with (the keypoints use the same one)."""

    items: list[PoseItem]
    settings: Snapshot


class PoseOutput:
    """Keypoints of the persons in each frame, published on ~/keypoints (and ~/markers)."""

    def __init__(self, node: Any, classes: Sequence[str]) -> None:
        """node: the SegppNode (its parameter snapshot, counters, throttled log and overlay publisher)."""
        self.node = node
        values = node.values
        try:
            self.person_ids = person_class_ids(values["pose.person_classes"], classes)
        except ValueError as err:
            # a segmentation model without persons must not stop a node that may only segment
            self.person_ids = []
            node.get_logger().warning(f"{err}. Until then no person boxes come from the segmentation "
                                      "(pose.box_source whole_frame still works)")
        self.estimator: PoseEstimator | None = None
        self._applied_merge: MergeConfig | None = None  # the merge object last applied
        self.merge_budget = MergeBudget(POSE_LADDER)
        # why the last load failed: no retry per frame (the weights are read-only), only when
        # pose.enable is switched on again
        self.load_failure: str | None = None
        self.latency = Window()
        self.persons_last = 0
        self.worker: SlotWorker[PoseJob] = SlotWorker("segpp-pose", self._handle, self._failed)
        self._publishers: list[Any] = []
        if values["pose.enable"]:
            self.load(values)  # before any publisher exists: a failure leaves nothing behind

    def create_publishers(self) -> None:
        """The shared (latched) ~/keypoint_info."""
        self.pub_info = self.node.create_publisher(KeypointInfo, "~/keypoint_info", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self._publishers = [self.pub_info]

    def create_camera_publishers(self, camera: Any) -> None:
        """A camera's ~/keypoints and ~/markers (kept on the camera, destroyed with its others)."""
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        camera.publishers["keypoints"] = self.node.create_publisher(PersonKeypointsArray, camera.output("keypoints"),
                                                                    reliable)
        camera.publishers["markers"] = self.node.create_publisher(MarkerArray, camera.output("markers"), reliable)

    def destroy_publishers(self) -> None:
        for publisher in self._publishers:
            self.node.destroy_publisher(publisher)
        self._publishers = []

    def publish_info(self) -> None:
        """~/keypoint_info (latched), once a model is loaded: at activation and after a live load."""
        estimator = self.estimator
        if estimator is not None:
            self.node.publish(self.pub_info, lambda: keypoint_info_message(
                estimator.keypoint_names, estimator.skeleton, estimator.flip_pairs,
                self.node.get_clock().now().to_msg()))

    def load(self, values: Snapshot) -> PoseEstimator:
        """Load the pose model (at start, or on the first frame after pose.enable turns true).
        After a failure, raises the same PoseLoadError without trying again until
        ``retry_load()``."""
        if self.estimator is not None:
            return self.estimator
        if self.load_failure is not None:
            raise PoseLoadError(self.load_failure)
        weights = values["pose.weights"] or None
        try:
            estimator = PoseEstimator(weights, device=values["device"], precision=values["precision"],
                                      merge=values.pose_merge, padding=values["pose.padding"],
                                      flip_test=values["pose.flip_test"], cuda_graphs=values["cuda_graphs"])
        except Exception as err:  # noqa: BLE001 -- any failure to load is reported the same way
            self.load_failure = (f"cannot load the pose weights: {str(err).rstrip('.')}. Fix the 'pose.weights' "
                                 "parameter, leave it empty for the embedded model, or set pose.enable false")
            self.node.counters.bump("pose_load_errors")
            raise PoseLoadError(self.load_failure) from None
        self.estimator = estimator
        self._applied_merge = values.pose_merge
        if self._publishers:
            self.publish_info()  # loaded live: tell the subscribers now
        self.node.get_logger().info(f"pose: {estimator.describe()}, merge '{estimator.model.merge.name}'")
        return estimator

    def warm_up(self) -> None:
        if self.estimator is not None:
            self.estimator(np.zeros((480, 640, 3), np.uint8), [whole_frame_box(480, 640)])

    def check(self, view: Mapping[str, Any]) -> str | None:
        """Node-specific validation of a parameter view (beyond segpp_ros.ros.params)."""
        if view["pose.flip_test"] and self.estimator is not None and not self.estimator.flip_pairs:
            return (f"pose.flip_test needs left/right keypoint pairs and {self.estimator.weights} has none: "
                    "keep it false")
        return None

    def start(self) -> None:
        self.worker.start()

    def put(self, job: PoseJob) -> None:
        if job.settings["pose.own_thread"]:
            self.worker.put(job)
            return
        try:
            self._handle(job)
        except Exception as err:  # noqa: BLE001 -- counted like the stage's own failures
            self._failed(err)

    def retry_load(self) -> None:
        """pose.enable was switched on: a model that failed to load gets one more try."""
        self.load_failure = None

    def _handle(self, job: PoseJob) -> None:
        values = job.settings
        results: list[PoseResult | None] = [None] * len(job.items)
        if values["pose.enable"]:
            try:
                results = self(values, job.items)
            except PoseLoadError as err:
                self.node.log_throttled("pose_load", f"{err} (keypoints are off until pose.enable is set again)",
                                        error=True)
        for item, result in zip(job.items, results):
            if item.overlay:
                self.node.publish_overlay(item.camera, item.image, item.labels, item.header, result, values)

    def _failed(self, err: Exception) -> None:
        self.node.counters.bump("pose_errors")
        self.node.log_throttled("pose_error", f"keypoints failed: {type(err).__name__}: {err}", error=True)

    def boxes(self, values: Mapping[str, Any], image_hw: tuple[int, int], labels: np.ndarray) -> list:
        h, w = image_hw
        if values["pose.box_source"] == "whole_frame":
            return [whole_frame_box(h, w)]
        scale = (w / labels.shape[1], h / labels.shape[0])
        return person_boxes(labels, self.person_ids, min_area=values["pose.min_box_area"],
                            merge_gap=values["pose.merge_gap"], scale=scale)

    def __call__(self, values: Snapshot, items: Sequence[PoseItem]) -> list[PoseResult]:
        """Keypoints of the frames of one batch (the persons of all cameras through one forward
        pass), each published on its camera's ~/keypoints (and ~/markers)."""
        start = time.perf_counter()
        if self.node.inject_faults:
            faults.inject_pose(items[0].header.frame_id)
        estimator = self.load(values)
        max_persons = values["pose.max_persons"]
        boxes = [self.boxes(values, item.image.shape[:2], item.labels) for item in items]
        persons = sum(min(len(b), max_persons) for b in boxes)
        # the pose model's time grows with the persons in the batch (and doubles with flip_test)
        budget, key = values["pose.merge.budget_ms"], (persons, values["pose.flip_test"])
        merge = self.merge_budget.choose(key, budget, values.pose_merge)
        if merge is not self._applied_merge:
            estimator.set_merge(merge)
            self._applied_merge = merge
        estimator.padding = values["pose.padding"]
        estimator.flip_test = values["pose.flip_test"]
        model_start = time.perf_counter()
        results = estimator.batch([(item.image, b) for item, b in zip(items, boxes)], max_persons)
        if self.node.inject_faults:
            faults.slow_down(items[0].header.frame_id, time.perf_counter() - model_start)
        if persons and not self.merge_budget.record(key, merge, (time.perf_counter() - model_start) * 1000, budget):
            self.node.counters.bump("pose_budget_missed")
        for item, result in zip(items, results):
            camera, header = item.camera, item.header
            self.node.publish(camera.publishers["keypoints"], lambda: keypoints_message(header, result))
            if camera.wants("markers"):
                self.node.counters.bump("rendered_markers")
                self.node.publish(camera.publishers["markers"], lambda: markers_message(
                    header, result, estimator.skeleton, estimator.keypoint_names, values["pose.score_threshold"],
                    values["pose.marker_scale"]))
        self.persons_last = sum(len(result.persons) for result in results)
        self.latency.add((time.perf_counter() - start) * 1000)
        return results

    def draw(self, values: Mapping[str, Any], overlay: np.ndarray, result: PoseResult) -> np.ndarray:
        if self.estimator is None or not values["pose.draw_overlay"]:
            return overlay
        return draw_skeletons(overlay, [p.keypoints for p in result.persons], self.estimator.skeleton,
                              self.estimator.keypoint_names, values["pose.score_threshold"])

    def status(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Diagnostics key/values of the pose stage."""
        enabled = bool(values["pose.enable"])
        merge = self.estimator.model.merge.name if self.estimator is not None else values["pose.merge.preset"]
        if self.load_failure is not None and enabled:
            merge = "(not loaded)"
        return {"pose": "on" if enabled else "off", "pose_persons_last": str(self.persons_last if enabled else 0),
                "pose_p50_ms": f"{self.latency.percentile(50):.1f}", "pose_merge_preset": merge,
                "pose_merge_budget_ms": f"{values['pose.merge.budget_ms']:g}",
                "pose_budget_met_pct": self.merge_budget.met_percent(values["pose.merge.budget_ms"]),
                "pose_budget_costs_ms": self.merge_budget.costs_text(values["pose.merge.budget_ms"]),
                "pose_box_source": values["pose.box_source"],
                "pose_dropped_overwritten": str(self.worker.slot.overwritten)}
