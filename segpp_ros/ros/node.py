"""The segpp node: camera images in, class-ID label images and human keypoints out.

A thin rclpy adapter over the inference core (segpp_ros.inference): parameters come from
segpp_ros.ros.params, messages from segpp_ros.ros.conversions. Frames go through a keep-latest slot
to one inference thread, so the executor never waits on the network and no stale frame
is ever queued. What a frame produces comes from the frame pipeline (segpp_ros.inference.pipeline),
which segpp-bag runs too; the node adds threads, slots, QoS and publishing. SegppBehaviour holds
what the node does; SegppNode runs it as a plain node (configured and active from the start),
segpp_ros.ros.lifecycle as a managed (lifecycle) node, segpp_ros.ros.process the process.

    ros2 run segpp segpp_node --ros-args --params-file config/segpp.yaml -r image:=/camera/image
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

from .env import ensure_ament_prefix, limit_decoder_pixels

ensure_ament_prefix()
limit_decoder_pixels()  # before anything imports OpenCV

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks  # noqa: E402
from rclpy.exceptions import (  # noqa: E402
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from segpp.msg import LabelPalette  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402
from vision_msgs.msg import LabelInfo as VisionLabelInfo  # noqa: E402

from ..inference.compiled import backend_text  # noqa: E402
from ..inference.pipeline import SEGMENTATION, FramePipeline, FrameResult, PipelineHooks  # noqa: E402
from ..inference.pipeline import Frame as PipelineFrame  # noqa: E402
from ..inference.pose import person_class_ids  # noqa: E402
from ..model.runtime import release_freed_memory  # noqa: E402
from .cameras import Camera  # noqa: E402
from .conversions import (  # noqa: E402
    ImageFormatError,
    array_to_image,
    compressed_to_rgb,
    image_to_rgb,
    label_encoding,
    palette_message,
)
from .camera_info import scaled as scaled_camera_info  # noqa: E402
from .health import ERROR, OK, Health, Stage, Verdict, skew_cause, stamp_text  # noqa: E402
from .depth import DepthOutput  # noqa: E402
from .logs import forward_core_logs  # noqa: E402
from .params import ALL_SPECS, SPECS_BY_NAME, ParamSpec, Snapshot, validate_changes  # noqa: E402
from .pose_stage import PoseJob, PoseLoadError, PoseOutput  # noqa: E402
from .qos import describe, incompatible_text, input_qos, latched_qos, output_qos, overrides  # noqa: E402
from .realtime import Counters, LatestPerKey, SlotWorker, Window, stamp_ns  # noqa: E402
from .vision import label_info_message  # noqa: E402

NODE_NAME = "segpp"
LOG_EVERY_S = 5.0  # one line per problem kind per this many seconds
CAMERA_INFO_LATE_S = 0.05  # how long a label's camera_info may trail its image (while stamps pair)
MIN_SIDE = 32  # the network's smallest input: smaller frames are refused as bad input
SHUTDOWN_TIMEOUT_S = 3.0  # one deadline for every worker thread to finish at shutdown


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, weights that do not load); the message says why."""


def descriptor(spec: ParamSpec, read_only: bool | None = None) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: description, choices (also as additional_constraints,
    which `ros2 param describe` shows), range, read-only (``read_only`` overrides the spec's)."""
    d = ParameterDescriptor(name=spec.name, description=spec.description,
                            read_only=spec.read_only if read_only is None else read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
    elif spec.constraint:
        d.additional_constraints = spec.constraint
    if spec.low is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
    elif spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
    return d


@dataclass
class Frame:
    """An input message, when it arrived (monotonic seconds) and from which camera."""

    msg: Image | CompressedImage
    arrived: float
    camera: Camera


@dataclass
class Decoded:
    """A frame that passed the checks: its RGB image [H, W, 3] and header."""

    frame: Frame
    image: np.ndarray
    header: Any
    stamp: int


class SegppBehaviour:
    """What the segpp node does, mixed into an rclpy Node (SegppNode: configured and active from
    the start) or LifecycleNode (segpp_ros.ros.lifecycle: the same steps as its transitions):

        _declare     parameters, counters, /diagnostics                 construction
        _configure   models, publishers, warm-up, worker threads         configure
        _activate    the input subscription; publishing starts           activate
        _deactivate  publishing stops, the subscription and waiting frame go   deactivate
        _cleanup     worker threads stopped, publishers and models freed      cleanup

    The methods below rely on the Node API of the class they are mixed into.
    """

    # read-only parameters (weights, device, ...) are refused by rclpy itself; the managed node
    # declares them changeable and refuses them unless it is unconfigured
    READ_ONLY_DESCRIPTORS = True

    def _declare(self, stop: threading.Event | None, hooks: PipelineHooks | None) -> None:
        """stop: set when the process is asked to stop; a warm-up in progress ends early.
        hooks: what the frames meet on their way (the node's own tests inject faults there)."""
        self._stop_requested = stop or threading.Event()
        self.hooks = hooks or PipelineHooks()
        forward_core_logs(self.get_logger())
        for spec in ALL_SPECS:
            try:
                self._declare_one(spec)
            except (InvalidParameterTypeException, InvalidParameterValueException) as err:
                # an override from --ros-args or a params file that the descriptor refuses
                raise StartupError(f"bad parameter {spec.name}: {err}. Fix it in the params file or the "
                                   f"--ros-args -p {spec.name}:=... override (default: {spec.default!r})") from None
        values = {s.name: self._typed(s, self._declared_value(s)) for s in ALL_SPECS}
        for spec in ALL_SPECS:
            reason = spec.validate(values[spec.name])
            if reason:
                raise StartupError(f"bad parameter: {reason}")
        try:
            # the whole parameter set, replaced (never edited) when parameters change
            self.values: Snapshot = Snapshot.of(values)
        except ValueError as err:
            raise StartupError(f"bad merge parameters: {err}") from None

        self.counters = Counters()
        self.inference_threads = torch.get_num_threads()  # until the first frame says
        self.latency, self.age, self.network, self.model_time = Window(), Window(), Window(), Window()
        self.own_time = Window()  # per frame: latency minus model time, what the node itself adds
        self._last_log: dict[str, float] = {}
        self._log_lock = threading.Lock()
        self._closing = threading.Event()  # set at shutdown: nothing is published from then on
        self._active = threading.Event()   # set while active: labels and keypoints are published
        self.segmenter: Any = None         # the models and threads exist while configured
        self.pipeline: FramePipeline | None = None
        self.pose: PoseOutput | None = None
        self.depth: DepthOutput | None = None
        self.worker: SlotWorker[Frame] | None = None
        self._image_publishers: list[Any] = []
        self._qos_table: dict[tuple[str, str], str] = {}   # (topic, side) -> its effective QoS
        self._incompatible: dict[str, str] = {}             # topic -> the incompatible peer, latest first
        self.health = Health()
        self.cameras: list[Camera] = []
        self.input_topic = ""              # the cameras' input topics, for logs and diagnostics
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.values["diagnostics_period"], self._publish_diagnostics)

    def publisher(self, kind: Any, topic: str, latched: bool = False) -> Any:
        """A publisher of ours: reliable keep-last 1 (latched: transient local, no overrides),
        ROS's qos_overrides parameters, incompatible subscribers counted and named."""
        qos = latched_qos() if latched else output_qos()
        name = self.resolve_topic_name(topic)
        events = PublisherEventCallbacks(
            incompatible_qos=functools.partial(self._on_incompatible_qos, name, "publisher", qos))
        publisher = self.create_publisher(kind, topic, qos, event_callbacks=events,
                                          qos_overriding_options=None if latched else overrides())
        self._qos_table[(name, "latched" if latched else "out")] = describe(publisher.qos_profile)
        return publisher

    def subscription(self, kind: Any, topic: str, callback: Any) -> Any:
        """An input of ours: best effort keep-last 1 (matches any publisher), qos_overrides
        parameters, incompatible publishers counted and named."""
        qos = input_qos()
        name = self.resolve_topic_name(topic)
        events = SubscriptionEventCallbacks(
            incompatible_qos=functools.partial(self._on_incompatible_qos, name, "subscription", qos))
        sub = self.create_subscription(kind, topic, callback, qos, event_callbacks=events,
                                       qos_overriding_options=overrides())
        self._qos_table[(name, "in")] = describe(sub.qos_profile)
        return sub

    def _configure(self) -> None:
        """Load and warm up the models, create the publishers, start the worker threads; raises
        StartupError (leaving nothing behind) when the models cannot be loaded."""
        segmenter = self._load_segmenter(self.values.merge)
        try:
            person_ids = person_class_ids(self.values["pose.person_classes"], segmenter.classes)
        except ValueError as err:
            # a segmentation model without persons must not stop a node that may only segment
            person_ids = []
            self.get_logger().warning(f"pose.person_classes {err}. Until then no person boxes come from the "
                                      "segmentation (pose.box_source whole_frame still works)")
        self.pipeline = FramePipeline(segmenter, person_ids=person_ids, hooks=self.hooks)
        try:
            pose = PoseOutput(self, self.pipeline)
        except (PoseLoadError, ValueError) as err:
            raise StartupError(str(err)) from None
        self.segmenter, self.pose = segmenter, pose
        self.depth = DepthOutput(self) if self.values["depth.enable"] else None
        reason = self._check_classes(self.values)
        if reason:
            raise StartupError(reason)
        self.cameras = [Camera(name) for name in self.values["cameras"] or [""]]
        for camera in self.cameras:
            camera.input_topic = self._input_topic(camera)
            camera.info_topic = self.sibling_info_topic(camera)
            camera.detections_topic = self.resolve_topic_name(camera.input("detections"))
        self.input_topic = ", ".join(camera.input_topic for camera in self.cameras)
        for camera in self.cameras:
            camera.publishers = {leaf: self.publisher(Image, camera.output(leaf)) for leaf in ("label", "color", "overlay")}
            camera.publishers["camera_info"] = self.publisher(CameraInfo, camera.output("camera_info"))
            self.pose.create_camera_publishers(camera)
            if self.depth is not None:
                self.depth.configure(camera)
        self.pub_label_info = self.publisher(VisionLabelInfo, "~/label_info", latched=True)
        self.pub_palette = self.publisher(LabelPalette, "~/palette", latched=True)
        self._image_publishers = [self.pub_label_info, self.pub_palette]
        self.pose.create_publishers()
        self._warm_up()
        self._reset_health()  # the "no image for N s" clocks start now, after loading and warm-up
        slot = LatestPerKey(self.values["batch_window_ms"] / 1000, self.values["batch_max"])
        self.worker = SlotWorker("segpp-inference", self._process, self._frame_failed, slot)
        self.worker.start()
        self.pose.start()

    def _activate(self) -> None:
        """Subscribe and publish: the latched class and keypoint tables first."""
        self._active.set()
        self._publish_label_info()
        self.pose.publish_info()
        self._reset_health()
        for camera in self.cameras:
            kind, topic = ((CompressedImage, camera.input_topic) if self.values["transport"] == "compressed"
                           else (Image, camera.input("image")))
            camera.subscriptions = [
                self.subscription(kind, topic, functools.partial(self._on_image, camera)),
                self.subscription(CameraInfo, camera.info_topic, functools.partial(self._on_camera_info, camera)),
                self.subscription(Detection2DArray, camera.input("detections"),
                                  functools.partial(self._on_detections, camera))]
            if self.depth is not None:
                camera.subscriptions += self.depth.subscriptions(camera)
        self.get_logger().info(
            f"segmenting {self.input_topic} ({self.values['transport']}) with {self.segmenter.describe()} "
            f"on {self.segmenter.device}, merge '{self.values.merge.name}'")
        self._log_qos()

    def _log_qos(self) -> None:
        """The effective QoS of every input and output, once: grouped by profile."""
        groups: dict[tuple[str, str], list[str]] = {}
        for (topic, side), qos in self._qos_table.items():
            groups.setdefault((side, qos), []).append(topic)
        words = {"in": "inputs", "out": "outputs", "latched": "latched"}
        self.get_logger().info("QoS: " + "; ".join(f"{words[side]} {qos}: {', '.join(sorted(topics))}"
                                                   for (side, qos), topics in sorted(groups.items())))

    def _deactivate(self) -> None:
        """Stop publishing at once (a frame in progress publishes nothing) and drop the input."""
        self._active.clear()
        for camera in self.cameras:
            for sub in camera.subscriptions:
                self.destroy_subscription(sub)
            camera.subscriptions = []
        if self.worker is not None:
            self.worker.slot.clear()   # the frames waiting in the slot are dropped too

    def _cleanup(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the workers (one shared deadline), destroy the publishers, free the models (and
        the CUDA cache); True when every worker ended in time."""
        finished = self._stop_workers(timeout)
        for publisher in [*self._image_publishers, *(p for c in self.cameras for p in c.publishers.values())]:
            self.destroy_publisher(publisher)
        self._image_publishers = []
        for camera in self.cameras:
            camera.publishers = {}
        if self.pose is not None:
            self.pose.destroy_publishers()
        device = getattr(self.segmenter, "device", None)
        for model in (self.segmenter, self.pose and self.pose.estimator):
            close = getattr(getattr(model, "forward", None), "close", None)
            if close is not None:
                close()                  # a compiled backend's background compilations end
        self.segmenter = self.pose = self.worker = self.pipeline = None
        import gc

        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        release_freed_memory()
        return finished

    def _reset_health(self) -> None:
        """New watchdogs: their "no image for N s" clocks start now."""
        self.health = Health()
        for camera in self.cameras:
            camera.health = Health()

    def _stop_workers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        workers = [w for w in (self.worker, self.pose.worker if self.pose else None) if w is not None]
        for worker in workers:
            worker.stop()
        return all([worker.join(deadline) for worker in workers])

    # -- start-up ---------------------------------------------------------------------------------
    def _declare_one(self, spec: ParamSpec) -> None:
        final = descriptor(spec, spec.read_only and self.READ_ONLY_DESCRIPTORS)
        if not (spec.is_list and not spec.default):
            self.declare_parameter(spec.name, spec.default, final)
            return
        # rclpy cannot tell the type of an empty list: declared by type, writable until its value
        # is set (left unset, `ros2 param get` and `ros2 param dump` could not show it), then
        # given its real descriptor
        kind = Parameter.Type.STRING_ARRAY if spec.items is str else Parameter.Type.INTEGER_ARRAY
        self.declare_parameter(spec.name, kind, descriptor(spec, read_only=False))
        try:
            self.get_parameter(spec.name)
        except ParameterUninitializedException:
            self.set_parameters([Parameter(spec.name, kind, [])])
        final.type = kind.value
        self.set_descriptor(spec.name, final)

    def _declared_value(self, spec: ParamSpec) -> Any:
        return self.get_parameter(spec.name).value

    @staticmethod
    def _typed(spec: ParamSpec, value: Any) -> Any:
        # integer arrays come back as array.array; ints given for float parameters stay ints
        if spec.is_list and value is not None and not isinstance(value, str):
            return [int(v) for v in value] if spec.items is int else list(value)
        if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def _load_segmenter(self, merge: Any):
        import torch

        from ..inference import Segmenter
        from ..model import CheckpointError

        if self.values["threads"] > 0:
            torch.set_num_threads(self.values["threads"])
        weights = self.values["weights"] or None
        self.get_logger().info(f"loading {weights or 'the embedded segmentation model'} on device "
                               f"'{self.values['device']}' ({self.values['precision']})")
        try:
            # compiled in the background: a frame of a new size or merge configuration runs in
            # PyTorch meanwhile, never waits for a compilation
            segmenter = Segmenter(weights, device=self.values["device"], precision=self.values["precision"],
                                  merge=merge, max_side=self.values["max_side"] or None,
                                  cuda_graphs=self.values["cuda_graphs"], backend=self.values["backend"],
                                  background_compile=True)
        except (CheckpointError, OSError, ValueError, RuntimeError) as err:
            raise StartupError(f"cannot load the segmentation weights: {str(err).rstrip('.')}. Fix the 'weights' "
                               "parameter, or leave it empty for the embedded model") from None
        variant = self.values["variant"]
        if variant and segmenter.model.spec.name != variant:
            raise StartupError(f"parameter variant is {variant!r} but {segmenter.weights} holds a MiT-"
                               f"{segmenter.model.spec.name.upper()} model; fix 'variant' or 'weights'")
        return segmenter

    def _warm_up(self) -> None:
        """First forwards allocate memory and pick kernels: do them before the first frame."""
        n = self.values["warmup_frames"]
        if n == 0:
            return
        start = time.perf_counter()
        for done in range(n):
            if self._stop_requested.is_set():
                self.get_logger().info(f"warm-up: stopped after {done} frames (shutting down)")
                return
            self.pipeline.warm_up(self.values.frame)
        self.get_logger().info(f"warm-up: {n} frames in {time.perf_counter() - start:.2f} s")

    def _input_topic(self, camera: Camera) -> str:
        """The resolved input topic of a camera: <camera>/image, or with transport compressed
        image_transport's convention, <resolved image topic>/compressed unless
        <camera>/image/compressed is remapped itself."""
        if self.values["transport"] != "compressed":
            return self.resolve_topic_name(camera.input("image"))
        direct = self.resolve_topic_name(camera.input("image/compressed"))
        if direct != self.resolve_topic_name(camera.input("image/compressed"), only_expand=True):
            return direct
        return self.resolve_topic_name(camera.input("image")) + "/compressed"

    def sibling_info_topic(self, camera: Camera, image: str = "image", info: str = "camera_info") -> str:
        """The resolved camera_info topic of a camera's image (or depth) input: image_transport's
        convention, the sibling of the image topic (image:=/camera/image_raw -> /camera/camera_info),
        unless <camera>/``info`` is remapped itself."""
        direct = self.resolve_topic_name(camera.input(info))
        if direct != self.resolve_topic_name(camera.input(info), only_expand=True):
            return direct
        return self.resolve_topic_name(camera.input(image)).rsplit("/", 1)[0] + "/camera_info"

    def _publish_label_info(self) -> None:
        stamp = self.get_clock().now().to_msg()
        self.publish(self.pub_label_info, lambda: label_info_message(self.segmenter.classes, stamp))
        self.publish(self.pub_palette, lambda: palette_message(self.segmenter, stamp))

    # -- parameters -------------------------------------------------------------------------------
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validation only (rclpy may still reject the change after us): no side effects here."""
        changes = {}
        for p in params:
            spec = SPECS_BY_NAME.get(p.name)
            changes[p.name] = self._typed(spec, p.value) if spec else p.value
        reason = (validate_changes(self.values, changes, reload_allowed=self._reload_allowed())
                  or (self.pose.check({**self.values, **changes}) if self.pose is not None else None)
                  or self._check_classes({**self.values, **changes}))
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _check_classes(self, values: Any) -> str | None:
        """points.classes must name classes the loaded model has (None: fine, or no model yet)."""
        if self.segmenter is None or not values["points.classes"].strip():
            return None
        from ..inference.pose import person_class_ids

        try:
            person_class_ids(values["points.classes"], self.segmenter.classes)
        except ValueError as err:
            return f"points.classes {err}"
        return None

    def _reload_allowed(self) -> bool:
        """Whether read-only parameters (weights, device, ...) may change now: never for the
        plain node; while unconfigured for the managed one."""
        return False

    def _apply_parameters(self, params: list[Parameter]) -> None:
        changes = {p.name: self._typed(SPECS_BY_NAME[p.name], p.value) for p in params if p.name in SPECS_BY_NAME}
        if not changes:
            return
        previous = self.values
        # one new snapshot, swapped in whole: a frame reads either all of this change or none of it;
        # the workers apply a new merge object between frames
        self.values = previous.changed(changes)
        if changes.get("pose.enable") and not previous["pose.enable"] and self.pose is not None:
            self.pose.retry_load()
        if self.worker is not None and isinstance(self.worker.slot, LatestPerKey):
            self.worker.slot.window_s = self.values["batch_window_ms"] / 1000
            self.worker.slot.max_items = self.values["batch_max"]
        if self.values.merge is not previous.merge:
            self.get_logger().info(f"merge -> {self.values.merge.name!r} from the next frame")
        if self.values.pose_merge is not previous.pose_merge:
            self.get_logger().info(f"pose merge -> {self.values.pose_merge.name!r} from the next frame")

    # -- frames -----------------------------------------------------------------------------------
    def _on_image(self, camera: Camera, msg: Image | CompressedImage) -> None:
        self.health.input()
        camera.health.input()
        self.worker.slot.put(Frame(msg, time.monotonic(), camera), camera.name)

    def _on_camera_info(self, camera: Camera, msg: CameraInfo) -> None:
        camera.infos.put(stamp_ns(msg.header), msg)

    def _on_detections(self, camera: Camera, msg: Detection2DArray) -> None:
        camera.detections.put(stamp_ns(msg.header), msg)

    def _problem(self, kind: str, text: str, camera: Camera | None = None) -> None:
        """A frame that ends without labels: counted, told to the watchdogs (the node's and its
        camera's), logged (throttled)."""
        self.counters.bump(kind)
        self.health.problem(kind, text)
        if camera is not None:
            camera.counters.bump(kind)
            camera.health.problem(kind, text)
        self.log_throttled(kind, text)

    def _frame_failed(self, err: Exception, cameras: list[Camera] | None = None) -> None:
        if self._closing.is_set():
            return  # publishers and clock may be gone: a frame cut short by shutdown is no error
        text = f"frame failed: {type(err).__name__}: {err}"
        self.counters.bump("errors")
        self.health.problem("errors", text)
        for camera in cameras or ():
            camera.counters.bump("errors")
            camera.health.problem("errors", text)
        self.log_throttled("errors", text, error=True)

    def _process(self, frames: list[Frame]) -> None:
        """The frames waiting at one take (the newest of each camera): each checked and decoded,
        then one batched forward pass per network input size, at most batch_max frames each. A
        frame that fails takes only its own batch with it."""
        settings = self.values  # one snapshot for all of them
        groups: dict[tuple[int, int], list[Decoded]] = {}
        for frame in frames:
            try:
                decoded = self._decode(frame, settings)
            except Exception as err:  # noqa: BLE001 -- the other cameras' frames go on
                self._frame_failed(err, [frame.camera])
                continue
            if decoded is not None:
                groups.setdefault(self.pipeline.network_size(decoded.image, settings.frame), []).append(decoded)
        for group in groups.values():
            for first in range(0, len(group), settings["batch_max"]):
                batch = group[first:first + settings["batch_max"]]
                try:
                    self._segment(batch, settings)
                except Exception as err:  # noqa: BLE001 -- counted for each frame's camera
                    self._frame_failed(err, [d.frame.camera for d in batch])

    def _decode(self, frame: Frame, settings: Snapshot) -> Decoded | None:
        """The frame's RGB image, or None (counted as a problem of its camera) when it is too old
        or not an image we can read."""
        camera = frame.camera
        self.hooks.frame(frame.msg.header.frame_id)
        header = frame.msg.header
        stamp = stamp_ns(header)
        if stamp > 0:
            # positive: the stamp is behind this node's clock
            skew = (self.get_clock().now().nanoseconds - stamp) / 1e9
            limit = settings["stamp_skew_warning"]
            if limit > 0 and abs(skew) > limit:
                self.counters.bump("skewed_stamps")
                camera.counters.bump("skewed_stamps")
                self.health.stamp_skew(skew)
                camera.health.stamp_skew(skew)
                self.log_throttled("skewed_stamps", f"a frame on {camera.input_topic} is stamped {stamp_text(skew)} "
                                                    f"this node's clock: {skew_cause(skew)}; it is segmented anyway")
            max_age = settings["max_frame_age"]
            if max_age > 0 and skew > max_age:
                self._problem("dropped_stale", f"dropping a frame {skew:.3f} s old (max_frame_age {max_age} s); "
                                               "if every frame is dropped, the camera's clock differs from this "
                                               "node's: set max_frame_age 0 (the default)", camera)
                return None
        try:
            limits = dict(min_side=MIN_SIDE, max_pixels=settings["max_input_pixels"])
            image = (compressed_to_rgb(frame.msg, **limits) if isinstance(frame.msg, CompressedImage)
                     else image_to_rgb(frame.msg, **limits))
        except ImageFormatError as err:
            self._problem(f"bad_input_{err.kind}", f"skipping a frame on {camera.input_topic}: {err}", camera)
            return None
        return Decoded(frame, image, header, stamp)

    def _segment(self, batch: list[Decoded], settings: Snapshot) -> None:
        """One forward pass for frames of one network input size; each camera's outputs published
        with its own header."""
        # colours and the overlay come with the labels: on a GPU they are made there and copied
        # with them; the keypoint stage draws the skeletons on the overlay and publishes it
        frames = [PipelineFrame(d.image, d.header.frame_id, d.frame.camera.name, d.frame.camera.wants("color"),
                                d.frame.camera.wants("overlay"), context=d) for d in batch]
        results, report = self.pipeline.segment(frames, settings.frame)
        # what the forward pass really ran with: the `threads` parameter, or PyTorch's default
        self.inference_threads = torch.get_num_threads()
        # the optional images are made only for subscribed outputs: counted, so that is visible
        for leaf, made in (("color", sum(r.color is not None for r in results)),
                           ("overlay", sum(r.overlay is not None for r in results))):
            if made:
                self.counters.bump(f"rendered_{leaf}", made)
        if not report.budget_met:
            self.counters.bump("budget_missed")
        if len(batch) > 1:
            self.counters.bump("batches")
            self.counters.bump("frames_batched", len(batch))
        encoding = label_encoding(len(self.segmenter.classes))
        for d, result in zip(batch, results):
            camera, header = d.frame.camera, d.header
            self.publish(camera.publishers["label"], lambda: array_to_image(result.labels, header, encoding))
            self._publish_camera_info(d, result.labels.shape)
            if self.depth is not None:
                self.depth.attach(d, result, settings, self.segmenter.classes, self.segmenter.palette)
            if result.color is not None:
                self.publish(camera.publishers["color"], lambda: array_to_image(result.color, header, "rgb8"))
            # latency and rates describe the labels; keypoints follow on the pose stage's thread
            self.health.output()
            camera.health.output()
            latency = (time.monotonic() - d.frame.arrived) * 1000
            self.latency.add(latency)
            camera.latency.add(latency)
            self.network.add(result.network_ms)
            self.model_time.add(result.model_ms)
            self.own_time.add(latency - result.model_ms)
            if d.stamp > 0:
                self.age.add((self.get_clock().now().nanoseconds - d.stamp) / 1e6)
        if settings["pose.enable"]:
            # the next frames' segmentation overlaps these frames' keypoints
            self.pose.put(PoseJob(results, settings))
        else:
            for result in results:
                self.publish_overlay(result)
        # a CUDA graph for an input met for the first time, captured once its outputs are out
        self.pipeline.between_frames(SEGMENTATION)

    def _publish_camera_info(self, d: Decoded, label_hw: tuple[int, int]) -> None:
        """~/camera_info of a label: the frame's own camera_info (by stamp, else the latest,
        counted) at the label's resolution; nothing before any camera_info arrived."""
        camera = d.frame.camera
        info, paired = camera.infos.match(d.stamp, late_s=CAMERA_INFO_LATE_S)
        if info is None:
            return
        if not paired:
            self.counters.bump("camera_info_unpaired")
            camera.counters.bump("camera_info_unpaired")
            self.log_throttled(f"camera_info_{camera.name}", f"no camera_info on {camera.info_topic} has the stamp of "
                               f"the frame on {camera.input_topic}: ~/camera_info uses the latest one instead; stamp "
                               "the camera_info of each image with the image's stamp")
        self.publish(camera.publishers["camera_info"], lambda: scaled_camera_info(info, d.header, d.image.shape[:2],
                                                                                 label_hw))

    def publish_overlay(self, result: FrameResult) -> None:
        """~/overlay of the result's camera, when it was wanted (made)."""
        if result.overlay is not None:
            d: Decoded = result.frame.context
            self.publish(d.frame.camera.publishers["overlay"], lambda: array_to_image(result.overlay, d.header, "rgb8"))

    def publish(self, publisher: Any, build: Any, always: bool = False) -> None:
        """Publish ``build()`` while active (``always``: also while configured or unconfigured, as
        /diagnostics), never once shutting down; DDS refusing a sample under load is counted and
        logged, never raised."""
        if self._closing.is_set() or not (always or self._active.is_set()):
            return
        msg = self.hooks.outgoing(build())
        try:
            publisher.publish(msg)
        except Exception as err:  # noqa: BLE001 -- count, go on
            if self._closing.is_set():
                return  # the context went away while we published
            self.counters.bump("publish_errors")
            self.log_throttled("publish", f"publishing on {publisher.topic_name} failed: {err}")

    def log_throttled(self, kind: str, text: str, error: bool = False) -> None:
        """One line per ``kind`` per LOG_EVERY_S. Never raises: a log call must not end a thread."""
        now = time.monotonic()
        with self._log_lock:
            if now - self._last_log.get(kind, -1e9) < LOG_EVERY_S:
                return
            self._last_log[kind] = now
        try:
            # two call sites on purpose: rclpy keys a logging call site to one severity and raises
            # ValueError when the same line logs at another
            if error:
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)
        except Exception:  # noqa: BLE001 -- nothing left to report to
            pass

    def _on_incompatible_qos(self, topic: str, side: str, qos: QoSProfile, event: Any) -> None:
        """An incompatible peer of our ``side`` ('publisher', 'subscription') of ``topic``."""
        self.counters.bump("incompatible_qos")
        peer = "a subscriber" if side == "publisher" else "a publisher"
        self._incompatible.pop(topic, None)
        self._incompatible[topic] = peer
        self.log_throttled(f"qos_{topic}_{side}", incompatible_text(topic, side, qos, event))

    # -- diagnostics ------------------------------------------------------------------------------
    def _stages(self) -> list[Stage]:
        """The worker threads the watchdog looks after, inference first."""
        stages = [Stage("inference", self.worker.alive, self.worker.busy_since, self.latency.percentile(95))]
        if self.values["pose.enable"] and self.values["pose.own_thread"]:
            pose = self.pose.worker
            stages.append(Stage("keypoints", pose.alive, pose.busy_since, self.pose.latency.percentile(95)))
        return stages

    def _restart_dead_workers(self) -> None:
        for worker in (self.worker, self.pose.worker):
            if worker.death is not None and not worker.alive and not self._closing.is_set():
                reason, worker.death = worker.death, None
                if worker.restart():
                    stage = "inference" if worker is self.worker else "keypoints"
                    self.health.died(stage, reason, worker.restarts)

    def _idle_verdict(self) -> Verdict | None:
        """The status of a node that is not segmenting on purpose (the managed node while
        unconfigured or inactive); None while active."""
        return None

    def status(self) -> DiagnosticStatus:
        """One DiagnosticStatus: the watchdog's verdict, rates, latencies, drops, bad inputs and the
        active configuration."""
        now = time.monotonic()
        name = f"{self.get_fully_qualified_name()}: segmentation"
        idle = self._idle_verdict()
        if self.segmenter is None:
            return DiagnosticStatus(level=bytes([idle.level]), name=name, message=idle.message,
                                    values=[KeyValue(key="weights", value=self.values["weights"]),
                                            KeyValue(key="device", value=self.values["device"])])
        self._restart_dead_workers()
        values = self.values
        verdict = idle or self.health.verdict(self._stages(), values["no_image_warning"], self.input_topic, now)
        if verdict.level != OK:
            self.log_throttled(f"health_{verdict.level}", verdict.message, error=verdict.level == ERROR)
        counts = dict(self.counters)
        counts["dropped_overwritten"] = self.worker.slot.overwritten
        for key, value in (("worker_restarts", self.worker.restarts + self.pose.worker.restarts),
                           ("handler_failures", self.worker.handler_failures + self.pose.worker.handler_failures)):
            if value:
                counts[key] = value
        inputs, outputs = self.health.inputs, self.health.outputs
        fields = {
            "input_rate_hz": f"{inputs.rate(now):.2f}", "output_rate_hz": f"{outputs.rate(now):.2f}",
            "frames_in": str(inputs.total), "frames_out": str(outputs.total),
            "latency_p50_ms": f"{self.latency.percentile(50):.1f}",
            "latency_p95_ms": f"{self.latency.percentile(95):.1f}",
            "age_at_publish_p50_ms": f"{self.age.percentile(50):.1f}",
            "network_p50_ms": f"{self.network.percentile(50):.1f}",
            # pre-processing + network + upsampling + argmax: latency minus this is the node's own cost
            "model_p50_ms": f"{self.model_time.percentile(50):.1f}",
            "node_overhead_p50_ms": f"{self.own_time.percentile(50):.1f}",
            **{k: str(v) for k, v in sorted(counts.items())},
            "merge_preset": self.segmenter.model.merge.name, "merge_budget_ms": f"{values['merge.budget_ms']:g}",
            "budget_met_pct": self.pipeline.budget.met_percent(values["merge.budget_ms"]),
            "budget_costs_ms": self.pipeline.budget.costs_text(values["merge.budget_ms"]),
            "device": str(self.segmenter.device),
            "precision": self.segmenter.precision, "threads": str(self.inference_threads),
            "backend": backend_text(self.segmenter),
            "max_side": str(values["max_side"]),
            "input_topic": self.input_topic, "weights": self.segmenter.weights,
            "stamp_skew_s": f"{self.health.last_skew:.3f}",
            "camera_info": "; ".join(self._side_input_text(c.infos, c.info_topic) for c in self.cameras),
            "depth": ("; ".join(self._side_input_text(c.depths, c.depth_topic) for c in self.cameras)
                      if self.depth is not None else "off"),
            "incompatible_qos_peers": ", ".join(f"{peer} of {topic}" for topic, peer in
                                                reversed(self._incompatible.items())) or "none",
            "detections": "; ".join(self._side_input_text(c.detections, c.detections_topic) for c in self.cameras),
            **self.pose.status(values),
        }
        return DiagnosticStatus(level=bytes([verdict.level]), name=name,
                                message=verdict.message, hardware_id=str(self.segmenter.device),
                                values=[KeyValue(key=k, value=v) for k, v in fields.items()])

    def camera_status(self, camera: Camera) -> DiagnosticStatus:
        """The status of one named camera: its own watchdog's verdict (no image, bad input, ...),
        rates, latency and drops."""
        now = time.monotonic()
        idle = self._idle_verdict()
        verdict = idle or camera.health.verdict([], self.values["no_image_warning"], camera.input_topic, now)
        if verdict.level != OK:
            self.log_throttled(f"health_{camera.name}_{verdict.level}", f"camera {camera.name}: {verdict.message}",
                               error=verdict.level == ERROR)
        inputs, outputs = camera.health.inputs, camera.health.outputs
        fields = {
            "input_topic": camera.input_topic,
            "input_rate_hz": f"{inputs.rate(now):.2f}", "output_rate_hz": f"{outputs.rate(now):.2f}",
            "frames_in": str(inputs.total), "frames_out": str(outputs.total),
            "latency_p50_ms": f"{camera.latency.percentile(50):.1f}",
            "latency_p95_ms": f"{camera.latency.percentile(95):.1f}",
            "dropped_overwritten": str(self.worker.slot.overwritten_by[camera.name]),
            "stamp_skew_s": f"{camera.health.last_skew:.3f}",
            "camera_info": self._side_input_text(camera.infos, camera.info_topic),
            **{k: str(v) for k, v in sorted(camera.counters.items())},
        }
        return DiagnosticStatus(level=bytes([verdict.level]), name=f"{self.get_fully_qualified_name()}: camera "
                                f"{camera.name}", message=verdict.message, hardware_id=camera.input_topic,
                                values=[KeyValue(key=k, value=v) for k, v in fields.items()])

    @staticmethod
    def _side_input_text(store: Any, topic: str) -> str:
        """'12 received on /camera/camera_info' or 'none received on ...' for /diagnostics."""
        return f"{store.received or 'none'} received on {topic}"

    def _statuses(self) -> list[DiagnosticStatus]:
        """The model's status, then one per named camera (while configured)."""
        statuses = [self.status()]
        if self.segmenter is not None and self.worker is not None:
            statuses += [self.camera_status(camera) for camera in self.cameras if camera.name]
        return statuses

    def _publish_diagnostics(self) -> None:
        try:
            statuses = self._statuses()
        except Exception as err:  # noqa: BLE001 -- a timer callback that raises would end rclpy.spin
            self.log_throttled("diagnostics", f"diagnostics failed: {type(err).__name__}: {err}", error=True)
            return
        def build() -> DiagnosticArray:
            msg = DiagnosticArray(status=statuses)
            msg.header.stamp = self.get_clock().now().to_msg()
            return msg
        self.publish(self.pub_diagnostics, build, always=True)

    def close(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop publishing, ask every worker to stop, and wait for them until one shared deadline;
        True when all of them ended (a worker still inside a long forward pass may not)."""
        self._closing.set()
        return self._stop_workers(timeout)


class SegppNode(SegppBehaviour, Node):
    """The plain node: configured and active from construction to shutdown."""

    def __init__(self, stop: threading.Event | None = None, hooks: PipelineHooks | None = None, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self._declare(stop, hooks)
        self._configure()
        self._activate()
