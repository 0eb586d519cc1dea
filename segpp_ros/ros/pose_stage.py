"""The pose part of the segpp node: keypoints of the segmented frames -> ~/keypoints, ~/persons, ~/markers, ~/overlay.

Owned by SegppNode (segpp_ros.ros.node). A pipeline stage of its own: the segmentation thread
hands each segmented batch over (keep-latest, like the camera input) and goes on with the next
frame while this stage's thread runs the frame pipeline's keypoint step (person boxes, the pose
network, skeletons on the overlay), so persons in view do not lower the label rate where there
are cores (or a GPU) to spare. With pose.box_source detections this thread also waits (at most
pose.detections_wait_ms) for the detector's boxes of each frame. The parameter checks run on the
executor.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from segpp.msg import KeypointInfo, PersonKeypointsArray
from vision_msgs.msg import Detection2DArray
from visualization_msgs.msg import MarkerArray

from ..inference.compiled import backend_text
from ..inference.pipeline import KEYPOINTS, PERSON_BOXES, FramePipeline, FrameResult
from ..inference.pose import PoseEstimator
from .keypoint_msgs import keypoint_info_message, keypoints_message, markers_message
from .params import Snapshot
from .realtime import SlotWorker, Window
from .vision import detected_persons, parse_classes, persons_message


class PoseLoadError(RuntimeError):
    """The pose weights cannot be loaded; the message names the file and the fix."""


@dataclass
class PoseJob:
    """The segmented frames of one batch (one per camera; each result's frame context is the
    node's Decoded frame) and the parameter snapshot they were segmented with (the keypoints use
    the same one)."""

    results: list[FrameResult]
    settings: Snapshot


class PoseOutput:
    """Keypoints of the persons in each frame, published on ~/keypoints (and ~/markers)."""

    def __init__(self, node: Any, pipeline: FramePipeline) -> None:
        """node: the SegppNode (its parameter snapshot, counters, throttled log and publishing);
        pipeline: the node's frame pipeline, whose pose model this stage loads and runs."""
        self.node = node
        self.pipeline = pipeline
        values = node.values
        # why the last load failed: no retry per frame (the weights are read-only), only when
        # pose.enable is switched on again
        self.load_failure: str | None = None
        self.latency = Window()
        self.persons_last = 0
        self.worker: SlotWorker[PoseJob] = SlotWorker("segpp-pose", self._handle, self._failed)
        self._publishers: list[Any] = []
        if values["pose.enable"]:
            self.load(values)  # before any publisher exists: a failure leaves nothing behind

    @property
    def estimator(self) -> PoseEstimator | None:
        return self.pipeline.pose

    def create_publishers(self) -> None:
        """The shared (latched) ~/keypoint_info."""
        self.pub_info = self.node.publisher(KeypointInfo, "~/keypoint_info", latched=True)
        self._publishers = [self.pub_info]

    def create_camera_publishers(self, camera: Any) -> None:
        """A camera's ~/keypoints, ~/persons and ~/markers (kept on the camera, destroyed with its others)."""
        for leaf, kind in (("keypoints", PersonKeypointsArray), ("persons", Detection2DArray), ("markers", MarkerArray)):
            camera.publishers[leaf] = self.node.publisher(kind, camera.output(leaf))

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
                                      flip_test=values["pose.flip_test"], cuda_graphs=values["cuda_graphs"],
                                      backend=values["backend"], background_compile=True)
        except Exception as err:  # noqa: BLE001 -- any failure to load is reported the same way
            self.load_failure = (f"cannot load the pose weights: {str(err).rstrip('.')}. Fix the 'pose.weights' "
                                 "parameter, leave it empty for the embedded model, or set pose.enable false")
            self.node.counters.bump("pose_load_errors")
            raise PoseLoadError(self.load_failure) from None
        self.pipeline.pose = estimator
        if self._publishers:
            self.publish_info()  # loaded live: tell the subscribers now
        self.node.get_logger().info(f"pose: {estimator.describe()}, merge '{estimator.model.merge.name}'")
        return estimator

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
        if values["pose.enable"]:
            try:
                self(values, job.results)
            except PoseLoadError as err:
                self.node.log_throttled("pose_load", f"{err} (keypoints are off until pose.enable is set again)",
                                        error=True)
        for result in job.results:
            self.node.publish_overlay(result)

    def _failed(self, err: Exception) -> None:
        self.node.counters.bump("pose_errors")
        self.node.log_throttled("pose_error", f"keypoints failed: {type(err).__name__}: {err}", error=True)

    def __call__(self, values: Snapshot, results: list[FrameResult]) -> None:
        """Keypoints of the frames of one batch (the persons of all cameras through one forward
        pass), each published on its camera's ~/keypoints (and ~/markers), their skeletons drawn
        on the results' overlays."""
        start = time.perf_counter()
        estimator = self.load(values)
        if values["pose.box_source"] == "detections":
            self._attach_detections(results, values)
        report = self.pipeline.keypoints(results, values.frame)
        if not report.budget_met:
            self.node.counters.bump("pose_budget_missed")
        for result in results:
            camera, header, found = result.frame.context.frame.camera, result.frame.context.header, result.pose
            self.node.publish(camera.publishers["keypoints"], lambda: keypoints_message(header, found))
            self.node.publish(camera.publishers["persons"], lambda: persons_message(header, found))
            if self.node.depth is not None:
                self.node.depth.publish_3d(result, header, values, estimator.skeleton, estimator.keypoint_names,
                                           self.pipeline.person_ids)
            if camera.wants("markers"):
                self.node.counters.bump("rendered_markers")
                self.node.publish(camera.publishers["markers"], lambda: markers_message(
                    header, found, estimator.skeleton, estimator.keypoint_names, values["pose.score_threshold"],
                    values["pose.marker_scale"]))
        self.persons_last = sum(len(result.pose.persons) for result in results)
        self.latency.add((time.perf_counter() - start) * 1000)
        self.pipeline.between_frames(KEYPOINTS)     # after publishing: see FramePipeline.between_frames

    def _attach_detections(self, results: list[FrameResult], values: Snapshot) -> None:
        """Each frame's person boxes from the detector's message with its stamp (waiting at most
        pose.detections_wait_ms in all); a frame without one keeps the segmentation's (counted)."""
        deadline = time.monotonic() + values["pose.detections_wait_ms"] / 1000
        classes = parse_classes(values["pose.detection_classes"])
        for result in results:
            decoded = result.frame.context
            camera = decoded.frame.camera
            msg = camera.detections.wait(decoded.stamp, max(deadline - time.monotonic(), 0.0))
            if msg is None:
                self.node.counters.bump("detections_missing")
                camera.counters.bump("detections_missing")
                heard = ("none has arrived yet" if camera.detections.received == 0
                         else f"{camera.detections.received} arrived, none with this stamp")
                self.node.log_throttled(f"detections_{camera.name}", f"no detections on {camera.detections_topic} "
                                        f"for a frame of {camera.input_topic} within "
                                        f"{values['pose.detections_wait_ms']:g} ms ({heard}): its person boxes come "
                                        "from the segmentation instead; stamp the detections with the image's stamp "
                                        "or raise pose.detections_wait_ms")
                continue
            h, w = decoded.image.shape[:2]
            result.frame.extras[PERSON_BOXES] = detected_persons(msg, classes, h, w)

    def status(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Diagnostics key/values of the pose stage."""
        enabled = bool(values["pose.enable"])
        merge = self.estimator.model.merge.name if self.estimator is not None else values["pose.merge.preset"]
        if self.load_failure is not None and enabled:
            merge = "(not loaded)"
        return {"pose": "on" if enabled else "off", "pose_persons_last": str(self.persons_last if enabled else 0),
                "pose_p50_ms": f"{self.latency.percentile(50):.1f}", "pose_merge_preset": merge,
                "pose_merge_budget_ms": f"{values['pose.merge.budget_ms']:g}",
                "pose_budget_met_pct": self.pipeline.pose_budget.met_percent(values["pose.merge.budget_ms"]),
                "pose_budget_costs_ms": self.pipeline.pose_budget.costs_text(values["pose.merge.budget_ms"]),
                "pose_box_source": values["pose.box_source"],
                "pose_backend": backend_text(self.estimator) if self.estimator is not None else "(not loaded)",
                "pose_dropped_overwritten": str(self.worker.slot.overwritten)}
