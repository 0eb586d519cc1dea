"""The segpp node: camera images in, class-ID label images and human keypoints out.

A thin rclpy adapter over the inference core (segpp_ros.inference): parameters come from
segpp_ros.ros.params, messages from segpp_ros.ros.conversions. Frames go through a keep-latest slot
to one inference thread, so the executor never waits on the network and no stale frame
is ever queued.

    ros2 run segpp segpp_node --ros-args --params-file config/segpp.yaml -r image:=/camera/image
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from .env import ensure_ament_prefix

ensure_ament_prefix()

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks  # noqa: E402
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from segpp.msg import LabelInfo  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ..model.runtime import keep_freed_memory  # noqa: E402
from .conversions import ImageFormatError, array_to_image, compressed_to_rgb, image_to_rgb, label_encoding  # noqa: E402
from .params import ALL_SPECS, SPECS_BY_NAME, ParamSpec, merge_from, validate_changes  # noqa: E402
from .pose_stage import PoseJob, PoseLoadError, PoseOutput  # noqa: E402
from .realtime import Counters, RateMeter, SlotWorker, Window  # noqa: E402

NODE_NAME = "segpp"
LOG_EVERY_S = 5.0  # one line per problem kind per this many seconds


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, weights that do not load); the message says why."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: description, choices, range, read-only."""
    text = spec.description + (f" (one of: {', '.join(repr(c) for c in spec.choices)})" if spec.choices else "")
    d = ParameterDescriptor(name=spec.name, description=text, read_only=spec.read_only)
    if spec.low is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
    elif spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
    return d


@dataclass
class Frame:
    """An input message and when it arrived (monotonic seconds)."""

    msg: Image | CompressedImage
    arrived: float


def _stamp_ns(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class SegppNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in ALL_SPECS:
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except (InvalidParameterTypeException, InvalidParameterValueException) as err:
                # an override from --ros-args or a params file that the descriptor refuses
                raise StartupError(f"bad parameter {spec.name}: {err}. Fix it in the params file or the "
                                   f"--ros-args -p {spec.name}:=... override (default: {spec.default!r})") from None
        self.values: dict[str, Any] = {s.name: self._typed(s, self.get_parameter(s.name).value) for s in ALL_SPECS}
        for spec in ALL_SPECS:
            reason = spec.validate(self.values[spec.name])
            if reason:
                raise StartupError(f"bad parameter: {reason}")
        try:
            merge = merge_from(self.values, "merge")
        except ValueError as err:
            raise StartupError(f"bad merge parameters: {err}") from None

        self.counters = Counters()
        self.inputs, self.outputs = RateMeter(), RateMeter()
        self.latency, self.age, self.network, self.model_time = Window(), Window(), Window(), Window()
        self.own_time = Window()  # per frame: latency minus model time, what the node itself adds
        self._last_log: dict[str, float] = {}
        self._pending_merge = None
        self.segmenter = self._load_segmenter(merge)

        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.values["qos.depth"],
            reliability=(ReliabilityPolicy.RELIABLE if self.values["qos.reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT))
        events = PublisherEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self.pub_label = self.create_publisher(Image, "~/label", qos, event_callbacks=events)
        self.pub_color = self.create_publisher(Image, "~/color", qos, event_callbacks=events)
        self.pub_overlay = self.create_publisher(Image, "~/overlay", qos, event_callbacks=events)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_label_info = self.create_publisher(LabelInfo, "~/label_info", latched)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_label_info()
        try:
            self.pose = PoseOutput(self, self.segmenter.classes)
        except (PoseLoadError, ValueError) as err:
            raise StartupError(str(err)) from None

        self._warm_up()
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.worker: SlotWorker[Frame] = SlotWorker("segpp-inference", self._process, self._frame_failed)
        self.worker.start()
        self.pose.start()

        sub_events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        if self.values["transport"] == "compressed":
            self.input_topic = self._compressed_topic()
            self.create_subscription(CompressedImage, self.input_topic, self._on_image, qos,
                                     event_callbacks=sub_events)
        else:
            self.input_topic = self.resolve_topic_name("image")
            self.create_subscription(Image, "image", self._on_image, qos, event_callbacks=sub_events)
        self._started = time.monotonic()
        self.create_timer(self.values["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(
            f"segmenting {self.input_topic} ({self.values['transport']}) with {self.segmenter.describe()} "
            f"on {self.segmenter.device}, merge '{merge.name}'")

    # -- start-up ---------------------------------------------------------------------------------
    @staticmethod
    def _typed(spec: ParamSpec, value: Any) -> Any:
        # integer arrays come back as array.array; ints given for float parameters stay ints
        if isinstance(spec.default, list) and value is not None and not isinstance(value, str):
            return [int(v) for v in value]
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
        try:
            segmenter = Segmenter(weights, device=self.values["device"], precision=self.values["precision"],
                                  merge=merge, max_side=self.values["max_side"] or None)
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
        image = np.zeros((480, 640, 3), np.uint8)
        for _ in range(n):
            self.segmenter(image, output=self.values["output_resolution"])
            self.pose.warm_up()
        self.get_logger().info(f"warm-up: {n} frames in {time.perf_counter() - start:.2f} s")

    def _compressed_topic(self) -> str:
        """image_transport's convention: <resolved image topic>/compressed, unless remapped itself."""
        direct = self.resolve_topic_name("image/compressed")
        if direct != self.resolve_topic_name("image/compressed", only_expand=True):
            return direct
        return self.resolve_topic_name("image") + "/compressed"

    def _publish_label_info(self) -> None:
        msg = LabelInfo(class_names=list(self.segmenter.classes),
                        palette=self.segmenter.palette.reshape(-1).astype(np.uint8).tolist(),
                        model=self.segmenter.describe(), weights=self.segmenter.weights)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_label_info.publish(msg)

    # -- parameters -------------------------------------------------------------------------------
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validation only (rclpy may still reject the change after us): no side effects here."""
        changes = {}
        for p in params:
            spec = SPECS_BY_NAME.get(p.name)
            changes[p.name] = self._typed(spec, p.value) if spec else p.value
        reason = validate_changes(self.values, changes) or self.pose.check({**self.values, **changes})
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for p in params:
            spec = SPECS_BY_NAME.get(p.name)
            if spec:
                self.values[p.name] = self._typed(spec, p.value)
        if any(p.name.startswith("merge.") for p in params):
            # applied by the inference thread between frames: a forward never sees half a change
            self._pending_merge = merge_from(self.values, "merge")
            self.get_logger().info(f"merge -> {self._pending_merge.name!r} from the next frame")
        if any(p.name.startswith("pose.merge.") for p in params):
            self.pose.pending_merge = merge_from(self.values, "pose.merge")
            self.get_logger().info(f"pose merge -> {self.pose.pending_merge.name!r} from the next frame")

    # -- frames -----------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.inputs.tick()
        self.worker.put(Frame(msg, time.monotonic()))

    def _frame_failed(self, err: Exception) -> None:
        self.counters.bump("errors")
        self.log_throttled("error", f"frame failed: {type(err).__name__}: {err}", error=True)

    def _process(self, frame: Frame) -> None:
        if self._pending_merge is not None:
            merge, self._pending_merge = self._pending_merge, None
            self.segmenter.set_merge(merge)
        values = self.values
        self.segmenter.max_side = values["max_side"] or None
        header = frame.msg.header
        max_age = values["max_frame_age"]
        if max_age > 0 and _stamp_ns(header) > 0:
            age = (self.get_clock().now().nanoseconds - _stamp_ns(header)) / 1e9
            if age > max_age:
                self.counters.bump("dropped_stale")
                self.log_throttled("stale", f"dropping a frame {age:.3f} s old (max_frame_age {max_age} s); "
                                    "if every frame is dropped, the camera's clock differs from this node's: "
                                    "raise max_frame_age or set it to 0")
                return
        try:
            image = (compressed_to_rgb(frame.msg) if isinstance(frame.msg, CompressedImage)
                     else image_to_rgb(frame.msg))
        except ImageFormatError as err:
            self.counters.bump(f"bad_input_{err.kind}")
            self.log_throttled(f"bad_{err.kind}", f"skipping a frame on {self.input_topic}: {err}")
            return
        result = self.segmenter(image, output=values["output_resolution"])
        self._publish(self.pub_label, result.labels, header, label_encoding(len(self.segmenter.classes)))
        if self.pub_color.get_subscription_count() > 0:
            self._publish(self.pub_color, self.segmenter.colorize(result.labels), header, "rgb8")
        # latency and rates describe the labels; keypoints follow on the pose stage's thread
        self.outputs.tick()
        latency = (time.monotonic() - frame.arrived) * 1000
        self.latency.add(latency)
        self.network.add(result.network_ms)
        self.model_time.add(result.total_ms)
        self.own_time.add(latency - result.total_ms)
        if _stamp_ns(header) > 0:
            self.age.add((self.get_clock().now().nanoseconds - _stamp_ns(header)) / 1e6)
        overlay = self.pub_overlay.get_subscription_count() > 0
        if values["pose.enable"]:
            # the next frame's segmentation overlaps this frame's keypoints; the overlay, which
            # shows both, is published by the pose stage
            self.pose.put(PoseJob(image, result.labels, header, overlay))
        elif overlay:
            self.publish_overlay(image, result.labels, header, None)

    def publish_overlay(self, image: np.ndarray, labels: np.ndarray, header: Any, pose: Any) -> None:
        """~/overlay: the colour mask over the image, with the skeletons of ``pose`` when given."""
        overlay = self.segmenter.overlay(image, labels, self.values["overlay_alpha"])
        if pose is not None:
            overlay = self.pose.draw(self.values, overlay, pose)
        self._publish(self.pub_overlay, overlay, header, "rgb8")

    def _publish(self, publisher: Any, array: np.ndarray, header: Any, encoding: str) -> None:
        try:
            publisher.publish(array_to_image(array, header, encoding))
        except Exception as err:  # noqa: BLE001 -- DDS can refuse a sample under load; count, go on
            self.counters.bump("publish_errors")
            self.log_throttled("publish", f"publishing on {publisher.topic_name} failed: {err}")

    def log_throttled(self, kind: str, text: str, error: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= LOG_EVERY_S:
            self._last_log[kind] = now
            (self.get_logger().error if error else self.get_logger().warning)(text)

    def _on_incompatible_qos(self, event: Any) -> None:
        self.counters.bump("incompatible_qos")
        self.log_throttled("qos", f"incompatible QoS with a peer (policy id {event.last_policy_kind}): "
                            f"this node uses reliability '{self.values['qos.reliability']}'; set qos.reliability "
                            "to match the camera")

    # -- diagnostics ------------------------------------------------------------------------------
    def status(self) -> DiagnosticStatus:
        """One DiagnosticStatus with rates, latencies, drops, bad inputs and the active configuration."""
        now = time.monotonic()
        warn_after = self.values["no_image_warning"]
        last = self.inputs.last if self.inputs.last is not None else self._started
        silent = warn_after > 0 and now - last > warn_after
        level, message = DiagnosticStatus.OK, "segmenting"
        if silent:
            level, message = DiagnosticStatus.WARN, f"no image on {self.input_topic} for {now - last:.0f} s"
            self.log_throttled("silent", message)
        counts = dict(self.counters)
        counts["dropped_overwritten"] = self.worker.slot.overwritten
        values = {
            "input_rate_hz": f"{self.inputs.rate(now):.2f}", "output_rate_hz": f"{self.outputs.rate(now):.2f}",
            "frames_in": str(self.inputs.total), "frames_out": str(self.outputs.total),
            "latency_p50_ms": f"{self.latency.percentile(50):.1f}",
            "latency_p95_ms": f"{self.latency.percentile(95):.1f}",
            "age_at_publish_p50_ms": f"{self.age.percentile(50):.1f}",
            "network_p50_ms": f"{self.network.percentile(50):.1f}",
            # pre-processing + network + upsampling + argmax: latency minus this is the node's own cost
            "model_p50_ms": f"{self.model_time.percentile(50):.1f}",
            "node_overhead_p50_ms": f"{self.own_time.percentile(50):.1f}",
            **{k: str(v) for k, v in sorted(counts.items())},
            "merge_preset": self.segmenter.model.merge.name, "device": str(self.segmenter.device),
            "precision": self.values["precision"], "max_side": str(self.values["max_side"]),
            "input_topic": self.input_topic, "weights": self.segmenter.weights,
            **self.pose.status(self.values),
        }
        return DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: segmentation",
                                message=message, hardware_id=str(self.segmenter.device),
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray(status=[self.status()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(msg)

    def close(self) -> None:
        self.worker.close()
        self.pose.close()


USAGE = """usage: segpp_node [-h] [--ros-args ...]

The segpp ROS 2 node: sensor_msgs/Image on `image` (or CompressedImage on `image/compressed`
with transport:=compressed) in; ~/label, ~/color, ~/overlay, ~/label_info, ~/keypoints,
~/keypoint_info, ~/markers and /diagnostics out. Every parameter, with its default and
description, is in the package's config/segpp.yaml (also: segpp-params --markdown).

    segpp_node --ros-args --params-file config/segpp.yaml -r image:=/camera/image \\
        -p merge.preset:=fast
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else argv
    ours = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if "-h" in ours or "--help" in ours:
        print(USAGE, end="")  # before rclpy.init: asking for help must not start DDS
        return 0
    keep_freed_memory()  # before DDS and the inference worker start their threads (see its docstring)
    rclpy.init(args=args)
    node = None
    try:
        node = SegppNode()
        rclpy.spin(node)
    except StartupError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(err))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
