"""A recorded bag through the node's frame pipeline, with no ROS graph (what segpp-bag runs).

The input is read with the ``rosbags`` library: a ROS 2 bag (sqlite3 or MCAP storage) or a
ROS 1 bag. One image topic (sensor_msgs/Image or CompressedImage) is segmented, and the
keypoints computed, by the same inference core and the same message builders as the node, so
each output message is what the node would have published for that frame. The output bag gets

    <prefix>/label, /color, /overlay, /keypoints,  one per processed frame, the input's header
      /persons                                     verbatim, recorded at the input's receive time
    <prefix>/keypoints_3d, /points                 with --depth-topic: the 3-D outputs of each frame
                                                   paired with a depth image (as the node pairs them)
    <prefix>/label_info, /palette, /keypoint_info  once, at the first processed frame
    the input topic (and the depth topic, the      every input message in the time range, copied
      camera_infos)

each output topic with the QoS the node offers on it (reliable; the info topics transient
local, so a replay latches them as the node does), the input with its recorded QoS

(ROS 2 input bytes are copied verbatim; ROS 1 messages are converted). Or, with a video path,
the overlays (with skeletons) as an MP4 instead. A stop request (Ctrl-C) ends the run after the
frame in progress and closes the bag properly: what was written stays readable.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..inference.depth import DepthError, DepthFrame
from ..inference.pipeline import Frame, FramePipeline
from ..inference.pose import person_class_ids
from ..ros.conversions import ImageFormatError, array_to_image, compressed_to_rgb, image_to_rgb, label_encoding
from ..ros.env import share_file
from ..ros.params import SPECS_BY_NAME, Snapshot, defaults
from ..ros.realtime import ByStamp, stamp_ns
from .pairing import DepthPairing

RAW, COMPRESSED = "raw", "compressed"
# ROS 2 and ROS 1 names of the image types
IMAGE_TYPES: dict[str, str] = {"sensor_msgs/msg/Image": RAW, "sensor_msgs/msg/CompressedImage": COMPRESSED,
                               "sensor_msgs/Image": RAW, "sensor_msgs/CompressedImage": COMPRESSED}
OUTPUTS: tuple[str, ...] = ("label", "color", "overlay", "keypoints", "persons", "keypoints_3d", "points")
DEPTH_OUTPUTS: tuple[str, ...] = ("keypoints_3d", "points")      # only with a depth topic
OUR_MESSAGES: tuple[str, ...] = ("Keypoint", "PersonKeypoints", "PersonKeypointsArray", "KeypointInfo", "LabelPalette",
                                 "Keypoint3D", "PersonKeypoints3D", "PersonKeypoints3DArray")
VISION_MESSAGES: tuple[str, ...] = ("VisionClass", "LabelInfo", "Point2D", "Pose2D", "BoundingBox2D",
                                    "ObjectHypothesis", "ObjectHypothesisWithPose", "Detection2D", "Detection2DArray")
LATCHED: tuple[str, ...] = ("label_info", "palette", "keypoint_info")


class BagError(RuntimeError):
    """A bag that cannot be processed as asked; the message names the bag, the topic and the fix."""


# the Options fields that are node parameters: a params file fills them, the command line overrides
OPTION_PARAMS: dict[str, str] = {"weights": "weights", "device": "device", "precision": "precision",
                                 "backend": "backend",
                                 "merge": "merge.preset", "max_side": "max_side", "pose": "pose.enable",
                                 "overlay_alpha": "overlay_alpha", "score_threshold": "pose.score_threshold",
                                 "person_classes": "pose.person_classes"}


@dataclass(frozen=True)
class Options:
    """What segpp-bag does: which topic (None: the bag's first image topic), what to write under
    ``prefix``, the model settings of the node's parameters of the same names, every ``every``-th
    frame between ``start_s`` and ``end_s`` (seconds from the bag's start), and where.

    ``params``: further node parameters (e.g. from the robot's params file, ``from_params``):
    every setting of the frame pipeline that the fields here do not name, so a bag is labelled
    as the node with those parameters labels its camera."""

    topic: str | None = None
    prefix: str = "/segpp"
    outputs: tuple[str, ...] = OUTPUTS
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    merge: str = "none"
    max_side: int = 1024
    pose: bool = True
    overlay_alpha: float = 0.5
    score_threshold: float = 0.15
    person_classes: str = "person,rider"
    every: int = 1
    batch: int = 1                          # frames per forward pass (each gets what it gets alone)
    depth_topic: str | None = None
    depth_info_topic: str | None = None     # None: the depth topic's sibling camera_info
    start_s: float | None = None
    end_s: float | None = None
    storage: str = "mcap"
    video_fps: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **given: Any) -> Options:
        """Options from node parameters (``read_params_file``), the ``given`` fields overriding them."""
        fields = {name: params[param] for name, param in OPTION_PARAMS.items() if param in params}
        if fields.get("weights") == "":
            fields["weights"] = None
        return cls(**{**fields, **given}, params=dict(params))

    def snapshot(self) -> Snapshot:
        """The node parameters these options amount to (the defaults for the rest); raises
        BagError naming a bad one."""
        values = {**defaults(), **self.params}
        values.update({param: getattr(self, name) for name, param in OPTION_PARAMS.items()})
        values["weights"] = values["weights"] or ""
        for name, value in values.items():
            reason = SPECS_BY_NAME[name].validate(value)
            if reason:
                raise BagError(f"bad setting: {reason}")
        try:
            return Snapshot.of(values)
        except ValueError as err:
            raise BagError(f"bad merge setting: {err}") from None


@dataclass
class Summary:
    """What a run did: the topic, input messages read in the range, frames processed and skipped
    as unreadable, messages written per output topic, whether it was stopped early, seconds."""

    topic: str = ""
    read: int = 0
    processed: int = 0
    bad_frames: int = 0
    written: dict[str, int] = field(default_factory=dict)
    stopped: bool = False
    seconds: float = 0.0
    note: str = ""
    depth: dict[str, int] = field(default_factory=dict)    # paired / missing / refused frames
    depth_note: str = ""                                    # the first refusal's reason


@dataclass(frozen=True)
class CameraInfoK:
    """What the depth step reads of a camera_info (ROS 2 names ``k``, ROS 1 ``K``)."""

    header: Any
    k: Sequence[float]


def camera_info_k(msg: Any) -> CameraInfoK:
    return CameraInfoK(msg.header, [float(v) for v in (msg.k if hasattr(msg, "k") else msg.K)])


def image_topics(reader: Any) -> dict[str, str]:
    """Topic -> 'raw' or 'compressed' for every image topic of an open AnyReader, sorted by name."""
    return {c.topic: IMAGE_TYPES[c.msgtype] for c in sorted(reader.connections, key=lambda c: c.topic)
            if c.msgtype in IMAGE_TYPES}


def choose_topic(topics: dict[str, str], wanted: str | None, bag: Path) -> tuple[str, str]:
    """(topic, note): the wanted one, or the first when not given (the note lists the others)."""
    if not topics:
        raise BagError(f"{bag} has no image topic (sensor_msgs/Image or CompressedImage)")
    if wanted is not None:
        if wanted not in topics:
            raise BagError(f"{bag} has no image topic {wanted!r}; its image topics: {', '.join(topics)}")
        return wanted, ""
    first = next(iter(topics))
    note = "" if len(topics) == 1 else (f"{len(topics)} image topics ({', '.join(topics)}): processing {first}; "
                                        "choose another with --topic")
    return first, note


def sibling_info(topic: str) -> str:
    """The camera_info beside an image topic (/camera/depth/image_raw -> /camera/depth/camera_info)."""
    return topic.rsplit("/", 1)[0] + "/camera_info"


def depth_topics(reader: Any, options: Options, image_topic: str, bag: Path) -> dict[str, str]:
    """'depth', 'depth_info' and (when in the bag) 'color_info' topics of a --depth-topic run."""
    present = {c.topic: c.msgtype for c in reader.connections}
    depth = options.depth_topic
    if present.get(depth) not in ("sensor_msgs/msg/Image", "sensor_msgs/Image"):
        images = [t for t, kind in present.items() if kind in ("sensor_msgs/msg/Image", "sensor_msgs/Image")]
        raise BagError(f"{bag} has no raw image topic {depth!r} for --depth-topic; its raw image topics: "
                       f"{', '.join(images) or 'none'}")
    info = options.depth_info_topic or sibling_info(depth)
    if info not in present:
        raise BagError(f"{bag} has no depth camera_info {info!r} (the depth's intrinsics place its pixels in metres); "
                       "name it with --depth-info-topic")
    topics = {"depth": depth, "depth_info": info}
    if sibling_info(image_topic) in present:
        topics["color_info"] = sibling_info(image_topic)
    return topics


def typestore() -> Any:
    """The ROS 2 message definitions for the output bag: the standard ones and ours (msg/)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from ament_index_python.packages import get_package_share_directory

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for name in OUR_MESSAGES:
        types.update(get_types_from_msg(share_file("msg", f"{name}.msg").read_text(), f"segpp/msg/{name}"))
    vision = Path(get_package_share_directory("vision_msgs")) / "msg"
    for name in VISION_MESSAGES:
        types.update(get_types_from_msg((vision / f"{name}.msg").read_text(), f"vision_msgs/msg/{name}"))
    store.register(types)
    return store


def offered_qos(latched: bool) -> list[Any]:
    """The QoS the node offers on an output (reliable, keep last 1; latched: transient local), as
    a bag's metadata records it (ros2 bag play then publishes with it)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    forever = QosTime(sec=2147483647, nsec=4294967295)     # what rclcpp writes for "infinite"
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE, forever, forever,
                QosLiveliness.AUTOMATIC, forever, False)]


def ros_type_name(msg: Any) -> str:
    """'sensor_msgs/msg/Image' of an rclpy message object."""
    package = type(msg).__module__.split(".")[0]
    return f"{package}/msg/{type(msg).__name__}"


def rclpy_header(header: Any) -> Any:
    """A std_msgs/Header for rclpy messages from a deserialized one (stamp and frame_id exact)."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


def rclpy_image(msg: Any, kind: str) -> Any:
    """The rclpy Image / CompressedImage of a deserialized one (a ROS 1 message converted)."""
    from sensor_msgs.msg import CompressedImage, Image

    out: Any = Image() if kind == RAW else CompressedImage()
    out.header = rclpy_header(msg.header)
    if kind == RAW:
        out.height, out.width, out.encoding = int(msg.height), int(msg.width), str(msg.encoding)
        out.is_bigendian, out.step = int(msg.is_bigendian), int(msg.step)
    else:
        out.format = str(msg.format)
    out.data.frombytes(np.asarray(msg.data, np.uint8).tobytes())
    return out


class BagWriter:
    """The output bag: a connection per topic on first use, rclpy messages serialized as CDR."""

    def __init__(self, path: Path, storage: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
        self.store = typestore()
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def write_raw(self, topic: str, msgtype: str, timestamp: int, data: bytes | memoryview,
                  qos: Sequence[Any] = ()) -> None:
        """``qos``: the topic's offered QoS profiles, recorded with its first message."""
        connection = self.connections.get(topic)
        if connection is None:
            connection = self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                                              offered_qos_profiles=qos)
        self.writer.write(connection, timestamp, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic: str, msg: Any, timestamp: int, qos: Sequence[Any] = ()) -> None:
        from rclpy.serialization import serialize_message

        self.write_raw(topic, ros_type_name(msg), timestamp, serialize_message(msg), qos)

    def close(self) -> None:
        self.writer.close()


class VideoWriter:
    """The overlays as an MP4 (frames resized to the first frame's size)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: Any = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.size = (rgb.shape[1], rgb.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise BagError(f"cannot write the video {self.path}: OpenCV has no MP4 encoder here, or the "
                               "folder is not writable")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class Labeller:
    """The frame pipeline with segpp-bag's options, and the messages each frame gives."""

    def __init__(self, options: Options) -> None:
        from ..inference import Segmenter
        from ..inference.pose import PoseEstimator

        self.options = options
        values = options.snapshot()
        # a compiled backend compiles each new configuration before its frame (no frame runs in
        # PyTorch meanwhile, as in the node): every frame is labelled the same way
        segmenter = Segmenter(options.weights, device=options.device, precision=options.precision,
                              merge=values.merge, max_side=values.frame.max_side, cuda_graphs=values["cuda_graphs"],
                              backend=options.backend)
        pose = None
        if values["pose.enable"] and {"keypoints", "persons"} & set(options.outputs):
            pose = PoseEstimator(values["pose.weights"] or None, device=options.device, precision=options.precision,
                                 merge=values.pose_merge, padding=values["pose.padding"],
                                 flip_test=values["pose.flip_test"], cuda_graphs=values["cuda_graphs"],
                                 backend=options.backend)
        try:
            person_ids = person_class_ids(options.person_classes, segmenter.classes)
        except ValueError as err:
            raise BagError(f"--person-classes {err}") from None
        self.pipeline = FramePipeline(segmenter, pose, person_ids)
        self.settings = replace(values.frame, pose=replace(values.frame.pose, enable=pose is not None))
        self.values = values

    def info_messages(self, stamp: Any) -> dict[str, Any]:
        from ..ros.conversions import palette_message
        from ..ros.keypoint_msgs import keypoint_info_message
        from ..ros.vision import label_info_message

        segmenter = self.pipeline.segmenter
        messages = {"label_info": label_info_message(segmenter.classes, stamp),
                    "palette": palette_message(segmenter, stamp)}
        pose = self.pipeline.pose
        if pose is not None:
            messages["keypoint_info"] = keypoint_info_message(pose.keypoint_names, pose.skeleton, pose.flip_pairs,
                                                              stamp)
        return messages

    def frames(self, frames: Sequence[tuple[np.ndarray, Any, DepthFrame | None]],
               want_overlay: bool) -> list[tuple[dict[str, Any], np.ndarray | None]]:
        """Per frame (image, header, depth or None): output name -> message, and the overlay image
        (with skeletons) when wanted; with a depth its 3-D outputs too. The frames go through the
        pipeline together (one forward pass per network size); each gets what it gets alone."""
        outputs = self.options.outputs
        results = self.pipeline([Frame(image, header.frame_id, color="color" in outputs, overlay=want_overlay)
                                 for image, header, _ in frames], self.settings)
        return [self._messages(result, header, depth) for result, (_, header, depth) in zip(results, frames)]

    def _messages(self, result: Any, header: Any, depth: DepthFrame | None) -> tuple[dict[str, Any], np.ndarray | None]:
        from ..inference.depth import keypoints_3d
        from ..ros.depth import keypoints_3d_message, labelled_cloud, points_message
        from ..ros.keypoint_msgs import keypoints_message
        from ..ros.vision import persons_message

        outputs = self.options.outputs
        messages = {}
        if "label" in outputs:
            messages["label"] = array_to_image(result.labels, header,
                                               label_encoding(len(self.pipeline.segmenter.classes)))
        if "color" in outputs:
            messages["color"] = array_to_image(result.color, header, "rgb8")
        if result.pose is not None:
            if "keypoints" in outputs:
                messages["keypoints"] = keypoints_message(header, result.pose)
            if "persons" in outputs:
                messages["persons"] = persons_message(header, result.pose)
        if result.overlay is not None and "overlay" in outputs:
            messages["overlay"] = array_to_image(result.overlay, header, "rgb8")
        if depth is not None:
            if result.pose is not None and "keypoints_3d" in outputs:
                persons = keypoints_3d(result.pose, depth, result.labels, self.pipeline.person_ids)
                messages["keypoints_3d"] = keypoints_3d_message(header, depth.frame_id, persons)
            if "points" in outputs:
                segmenter = self.pipeline.segmenter
                cloud = labelled_cloud(result.labels, depth, self.values, segmenter.classes, segmenter.palette)
                messages["points"] = points_message(header, depth.frame_id, cloud)
        return messages, result.overlay


def _frames_in_range(reader: Any, topic: str, options: Options,
                     others: Sequence[str] = ()) -> tuple[Iterator[tuple[Any, int, bytes]], int | None]:
    """The messages of ``topic`` (and the ``others``) between start_s and end_s, in recording
    order, and how many of ``topic``'s there are (None: unknown)."""
    connections = [c for c in reader.connections if c.topic == topic]
    start = reader.start_time + int(options.start_s * 1e9) if options.start_s is not None else None
    stop = reader.start_time + int(options.end_s * 1e9) if options.end_s is not None else None
    total = sum(c.msgcount for c in connections) if start is None and stop is None else None
    connections += [c for c in reader.connections if c.topic in others]
    return reader.messages(connections=connections, start=start, stop=stop), total


def estimated_fps(reader: Any, topic: str, every: int) -> float:
    """Frames per second of the processed frames, from the topic's count over the bag's duration."""
    count = sum(c.msgcount for c in reader.connections if c.topic == topic)
    duration = reader.duration / 1e9
    return max(1.0, min(120.0, (count - 1) / duration / every)) if count > 1 and duration > 0 else 10.0


def process(source: Path, target: Path | None, options: Options, video: Path | None = None,
            stop: threading.Event | None = None, progress: Callable[[int | None], Any] | None = None,
            labeller: Labeller | None = None) -> Summary:
    """Run the bag ``source`` through the pipeline into the bag ``target`` (or the MP4 ``video``).

    ``stop``: when set, the run ends after the frames in progress (the output is closed properly).
    ``progress(total)``: a factory of a tqdm-like bar (``update()``, ``close()``) or None.
    ``labeller``: models already loaded for these options (segpp-fleet's workers keep theirs
    from bag to bag; its per-bag state, tracks and budgets, starts afresh here)."""
    from rosbags.highlevel import AnyReader

    started = time.monotonic()
    stop = stop or threading.Event()
    summary = Summary()
    try:
        reader = AnyReader([source])
        reader.open()
    except Exception as err:  # noqa: BLE001 -- rosbags raises several kinds for unreadable bags
        raise BagError(f"cannot read the bag {source}: {err}. segpp-bag reads ROS 2 bags (a folder with "
                       "metadata.yaml, sqlite3 or MCAP storage) and ROS 1 .bag files") from None
    try:
        topics = {t: k for t, k in image_topics(reader).items() if t != options.depth_topic}
        summary.topic, summary.note = choose_topic(topics, options.topic, source)
        kind = topics[summary.topic]
        sides = depth_topics(reader, options, summary.topic, source) if options.depth_topic else {}
        if labeller is None:
            labeller = Labeller(options)
        labeller.pipeline.reset()
        out = BagWriter(target, options.storage) if target is not None else None
        movie = VideoWriter(video, options.video_fps or estimated_fps(reader, summary.topic, options.every)) \
            if video is not None else None
        messages, total = _frames_in_range(reader, summary.topic, options, list(sides.values()))
        bar = progress((total + options.every - 1) // options.every if total is not None else None) \
            if progress else None
        prefix = options.prefix.rstrip("/")
        pairing: DepthPairing[tuple[int, np.ndarray, Any]] | None = \
            DepthPairing(int(labeller.values["depth.max_skew_ms"] * 1e6)) if sides else None
        infos: dict[str, ByStamp[Any]] = {name: ByStamp() for name in ("depth_info", "color_info")}
        role = {topic: name for name, topic in sides.items()}
        if sides:
            summary.depth = {"paired": 0, "missing": 0, "refused": 0}

        def depth_of(image: np.ndarray, msg: Any) -> DepthFrame | None:
            """The frame's DepthFrame, or None (counted; the first refusal's reason kept)."""
            from ..ros.depth import to_depth_frame

            if msg is None:
                summary.depth["missing"] += 1
                return None
            try:
                depth = to_depth_frame(msg, infos["depth_info"].match(stamp_ns(msg.header))[0],
                                       infos["color_info"].match(stamp_ns(msg.header))[0], image.shape[:2])
            except DepthError as err:
                summary.depth["refused"] += 1
                summary.depth_note = summary.depth_note or f"depth on {sides['depth']} refused: {err}"
                return None
            summary.depth["paired"] += 1
            return depth

        waiting: list[tuple[int, np.ndarray, Any, DepthFrame | None]] = []    # frames of the next batch

        def label(timestamp: int, image: np.ndarray, header: Any, depth_msg: Any) -> None:
            waiting.append((timestamp, image, header, depth_of(image, depth_msg) if sides else None))
            if len(waiting) >= options.batch:
                flush()

        def flush() -> None:
            if not waiting:
                return
            if out is not None and summary.processed == 0:
                for name, info in labeller.info_messages(waiting[0][2].stamp).items():
                    out.write(f"{prefix}/{name}", info, waiting[0][0], offered_qos(latched=True))
            made = labeller.frames([(image, header, depth) for _, image, header, depth in waiting],
                                   "overlay" in options.outputs or movie is not None)
            for (timestamp, *_), (outputs, overlay) in zip(waiting, made):
                if out is not None:
                    for name, built in outputs.items():
                        out.write(f"{prefix}/{name}", built, timestamp, offered_qos(name in LATCHED))
                if movie is not None and overlay is not None:
                    movie.add(overlay)
                summary.processed += 1
                if bar is not None:
                    bar.update()
            waiting.clear()

        try:
            for connection, timestamp, raw in messages:
                topic = connection.topic
                # ROS 2 input is copied as bytes: a frame skipped by --every is never deserialised
                msg = None if reader.is2 else reader.deserialize(raw, connection.msgtype)
                if out is not None:
                    input_qos = getattr(connection.ext, "offered_qos_profiles", ())
                    if reader.is2:
                        out.write_raw(topic, connection.msgtype, timestamp, raw, input_qos)
                    elif topic in (summary.topic, sides.get("depth")):
                        out.write(topic, rclpy_image(msg, RAW if topic != summary.topic else kind), timestamp)
                if topic in role:
                    msg = msg if msg is not None else reader.deserialize(raw, connection.msgtype)
                    if role[topic] == "depth":
                        ready = pairing.depth(stamp_ns(msg.header), timestamp, msg)
                    else:
                        infos[role[topic]].put(stamp_ns(msg.header), camera_info_k(msg))
                        continue
                else:
                    index = summary.read
                    summary.read += 1
                    if index % options.every:
                        continue
                    if msg is None:
                        msg = reader.deserialize(raw, connection.msgtype)
                    try:
                        image = image_to_rgb(msg) if kind == RAW else compressed_to_rgb(msg)
                    except ImageFormatError:
                        summary.bad_frames += 1
                        continue
                    header = rclpy_header(msg.header)
                    item = (timestamp, image, header)
                    ready = [(item, None)] if pairing is None else pairing.frame(stamp_ns(header), timestamp, item)
                for item, depth_msg in ready:
                    label(*item, depth_msg)
                if stop.is_set() and (summary.processed or waiting):
                    summary.stopped = True
                    break
            if pairing is not None and not summary.stopped:
                for item, depth_msg in pairing.finish():
                    label(*item, depth_msg)
            flush()
        finally:
            if bar is not None:
                bar.close()
            if out is not None:
                out.close()
                summary.written = dict(out.counts)
            if movie is not None:
                movie.close()
                summary.written["video frames"] = movie.frames
    finally:
        reader.close()
    summary.seconds = time.monotonic() - started
    return summary
