"""A sink for demos and tests: receives the segpp node's outputs, saves them, measures latency (rclpy).

Subscribes <prefix>/label, /color, /overlay (sensor data QoS: best effort, so it matches
reliable and best-effort publishers), <prefix>/keypoints (persons written as NNN_keypoints.json
next to the PNGs), <prefix>/label_info and /palette (transient local: the node's class table
and colours, written to classes.txt) and /diagnostics (the node's last status goes in the summary).

Latency of a frame = receive time (this node's clock) - header stamp. The node copies the
camera's header verbatim, so with the camera on this host it is camera-to-sink latency.
Frames are numbered in order of arrival of their header stamp; label, colour and overlay of
one input share a stamp and so a number: 000_label.png (class IDs, 8- or 16-bit),
000_color.png, 000_overlay.png. The command is segpp-sink (segpp_ros.cli.sink).
"""
from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_TOPICS = ("label", "color", "overlay")
SUMMARY_MARKER = "=== segpp-sink summary ==="  # segpp-demo finds the summary by this line
LINGER_S = 1.0  # after the last frame, wait this long for its colour/overlay to follow the label
MAX_TRACKED_STAMPS = 256  # frame numbers remembered; outputs of older frames no longer arrive


@dataclass(frozen=True)
class SinkSettings:
    """The node's output namespace, the folder for PNGs, every Nth frame saved (0: none), frames
    to wait for (0: until stopped), and seconds to wait for a first frame (None: forever)."""

    prefix: str = "/segpp"
    out: str = "out/demo"
    save_every: int = 1
    frames: int = 0
    timeout: float | None = None


def stamp_ns(header: Any) -> int:
    """header.stamp in nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def decode_label(msg: Any) -> np.ndarray:
    """mono8 / mono16 label image -> [H, W] uint8 / uint16 class IDs, honouring ``step``."""
    dtypes = {"mono8": np.dtype(np.uint8), "mono16": np.dtype(">u2" if msg.is_bigendian else "<u2")}
    if msg.encoding not in dtypes:
        raise ValueError(f"label encoding '{msg.encoding}' is not mono8 or mono16")
    dtype = dtypes[msg.encoding]
    h, w, step, row = msg.height, msg.width, msg.step, msg.width * dtype.itemsize
    buf = np.frombuffer(msg.data, np.uint8)
    if step < row or len(buf) < step * (h - 1) + row:
        raise ValueError(f"label {w}x{h} {msg.encoding}: step {step} and {len(buf)} data bytes do not fit")
    # as_strided: the last row's padding may be absent, so a reshape to (h, step) could fail
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    return np.ascontiguousarray(rows).view(dtype).reshape(h, w).astype(dtype.newbyteorder("="))


@dataclass
class TopicStats:
    """Receive times (monotonic s) and latencies (ms; NaN for an unstamped message) of one topic."""

    times: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, now: float, latency_ms: float | None) -> None:
        self.times.append(now)
        self.latencies_ms.append(float("nan") if latency_ms is None else latency_ms)

    @property
    def count(self) -> int:
        return len(self.times)

    def _since(self, since: float | None) -> int:
        """Index of the first sample received at or after ``since`` (0 for all)."""
        return 0 if since is None else next((i for i, t in enumerate(self.times) if t >= since), len(self.times))

    def fps(self, since: float | None = None) -> float:
        """Messages per second between the first and the last received (after ``since``)."""
        times = self.times[self._since(since):]
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def percentile(self, q: float, since: float | None = None) -> float:
        """q-th latency percentile (of the samples after ``since``); NaN when there are none."""
        values = [v for v in self.latencies_ms[self._since(since):] if not math.isnan(v)]
        return float(np.percentile(values, q)) if values else float("nan")

    def max(self) -> float:
        values = [v for v in self.latencies_ms if not math.isnan(v)]
        return max(values) if values else float("nan")


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))
    return "\n".join(line(r) for r in [header, *rows])


class Recorder:
    """Everything the sink learns, kept apart from rclpy so it can be summarised after shutdown."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.out = Path(settings.out)
        self.stats: dict[str, TopicStats] = {t: TopicStats() for t in (*IMAGE_TOPICS, "keypoints")}
        self.persons: list[int] = []  # persons per keypoints message
        self.frame_of: OrderedDict[int, int] = OrderedDict()  # header stamp -> frame number
        self.frames = 0
        self.done_at: float | None = None  # monotonic time the last wanted frame started arriving
        self.last_frame_topics: set[str] = set()
        self.label_info: Any = None     # vision_msgs/LabelInfo
        self.palette: Any = None        # segpp/LabelPalette
        self.diagnostics: Any = None
        self.saved = 0
        self.errors: list[str] = []
        self.started = time.monotonic()
        # PNG encoding off the executor thread: a slow write must not delay (and so inflate
        # the measured latency of) the next message
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segpp-sink-png")

    # -- frames ------------------------------------------------------------------------------
    def frame_number(self, stamp: int) -> int | None:
        """Number of the frame with this stamp; a new one is numbered unless --frames is reached."""
        if stamp in self.frame_of:
            return self.frame_of[stamp]
        if self.settings.frames and self.frames >= self.settings.frames:
            return None
        number = self.frame_of[stamp] = self.frames
        self.frames += 1
        if len(self.frame_of) > MAX_TRACKED_STAMPS:
            self.frame_of.popitem(last=False)
        if self.settings.frames and self.frames == self.settings.frames:
            self.done_at = time.monotonic()
        return number

    def _arrived(self, topic: str, header: Any, now_ns: int) -> int | None:
        """Count and time one output message; its frame number (None: past --frames, ignored)."""
        received = time.monotonic()
        stamp = stamp_ns(header)
        number = self.frame_number(stamp)
        if number is None:
            return None
        self.stats[topic].add(received, (now_ns - stamp) / 1e6 if stamp > 0 else None)
        if self.settings.frames and number == self.settings.frames - 1:
            self.last_frame_topics.add(topic)
        return number

    def _saved(self, number: int | None) -> bool:
        return number is not None and bool(self.settings.save_every) and number % self.settings.save_every == 0

    def on_image(self, topic: str, msg: Any, now_ns: int) -> None:
        """Count, time and (every Nth frame) save one label/color/overlay message."""
        number = self._arrived(topic, msg.header, now_ns)
        if self._saved(number):
            self._save(topic, msg, number)

    def on_keypoints(self, msg: Any, now_ns: int) -> None:
        """Count and time one keypoints message; on saved frames write its persons as JSON."""
        number = self._arrived("keypoints", msg.header, now_ns)
        if number is not None:
            self.persons.append(len(msg.persons))
        if self._saved(number):
            persons = [{"box": [round(float(v), 2) for v in p.box], "score": round(float(p.score), 4),
                        "instance_id": int(p.instance_id), "track_id": int(p.track_id),
                        "keypoints": [[round(k.x, 2), round(k.y, 2), round(k.score, 4)] for k in p.keypoints]}
                       for p in msg.persons]
            self.writer.submit(self._write_json, self.out / f"{number:03d}_keypoints.json", persons)

    def _write_json(self, path: Path, persons: list[dict]) -> None:
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"persons": persons}) + "\n")

    def _save(self, topic: str, msg: Any, number: int) -> None:
        try:
            if topic == "label":
                picture = decode_label(msg)
            else:
                from ..ros.conversions import image_to_rgb

                picture = image_to_rgb(msg)  # a view over msg.data, which the closure keeps alive
        except ValueError as err:  # includes conversions.ImageFormatError
            self.errors.append(f"{topic} frame {number}: {err}")
            return
        self.writer.submit(self._write, self.out / f"{number:03d}_{topic}.png", picture)

    def _write(self, path: Path, picture: np.ndarray) -> None:
        import cv2

        out = picture if picture.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2BGR)
        path.parent.mkdir(parents=True, exist_ok=True)
        if cv2.imwrite(str(path), out):
            self.saved += 1
        else:
            self.errors.append(f"could not write {path}")

    def finished(self) -> bool:
        """--frames reached and the last frame's other outputs arrived (or had their chance)."""
        if self.done_at is None:
            return False
        expected = {t for t, s in self.stats.items() if s.count}
        return expected <= self.last_frame_topics or time.monotonic() - self.done_at > LINGER_S

    def timed_out(self) -> bool:
        return (self.settings.timeout is not None and self.frames == 0
                and time.monotonic() - self.started > self.settings.timeout)

    # -- latched / status --------------------------------------------------------------------
    def on_label_info(self, msg: Any) -> None:
        """Keep the class table (vision_msgs/LabelInfo) and write classes.txt."""
        self.label_info = msg
        self._write_classes()

    def on_palette(self, msg: Any) -> None:
        """Keep the class colours (segpp/LabelPalette) and write classes.txt."""
        self.palette = msg
        self._write_classes()

    def _write_classes(self) -> None:
        """classes.txt: 'id name r g b' per class (colours 0 0 0 until ~/palette arrived)."""
        if self.label_info is None:
            return
        colors = np.asarray(self.palette.colors if self.palette is not None else [], np.uint8).reshape(-1, 3)
        lines = []
        for entry in sorted(self.label_info.class_map, key=lambda c: c.class_id):
            i = int(entry.class_id)
            r, g, b = (int(v) for v in colors[i]) if i < len(colors) else (0, 0, 0)
            lines.append(f"{i} {entry.class_name} {r} {g} {b}")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "classes.txt").write_text("\n".join(lines) + "\n")

    def on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(self.settings.prefix):
                self.diagnostics = status

    # -- reports -----------------------------------------------------------------------------
    def primary(self) -> str:
        """The topic frames are timed by: label, else the first that delivered anything."""
        return next((t for t in IMAGE_TOPICS if self.stats[t].count), "label")

    def progress_line(self) -> str:
        """Frames so far; rate and latency of the primary topic over the last seconds."""
        topic = self.primary()
        s, now = self.stats[topic], time.monotonic()
        return (f"segpp-sink: {self.frames} frames, {topic} {s.fps(now - 2.0):.1f} fps, "
                f"latency p50 {s.percentile(50, now - 1.0):.0f} ms, saved {self.saved}")

    def summary(self) -> str:
        """The final table: per topic frames, fps, latency p50/p95/max; classes; diagnostics."""
        rows = [[f"{self.settings.prefix}/{t}", str(s.count), f"{s.fps():.2f}", f"{s.percentile(50):.1f}",
                 f"{s.percentile(95):.1f}", f"{s.max():.1f}"] for t, s in self.stats.items()]
        lines = [SUMMARY_MARKER,
                 format_table(["topic", "frames", "fps", "p50 ms", "p95 ms", "max ms"], rows)]
        if self.label_info is not None:
            model = (f"model: {self.palette.model}; weights {self.palette.weights or '(embedded)'}; "
                     if self.palette is not None else "")
            lines.append(f"{model}{len(self.label_info.class_map)} classes in {self.out / 'classes.txt'}")
        else:
            lines.append(f"no {self.settings.prefix}/label_info received")
        if self.persons:
            lines.append(f"keypoints: {sum(self.persons)} persons in {len(self.persons)} frames "
                         f"(at most {max(self.persons)} in one)")
        lines.extend(self._diagnostics_lines())
        lines.append(f"{self.saved} PNGs in {self.out}/" + (f"; {len(self.errors)} errors, first: {self.errors[0]}"
                                                              if self.errors else ""))
        return "\n".join(lines)

    def _diagnostics_lines(self) -> list[str]:
        status = self.diagnostics
        if status is None:
            return [f"no /diagnostics status from {self.settings.prefix} received"]
        # DiagnosticStatus.level is a ROS 'byte': bytes of length 1 in rclpy
        raw = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
        level = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}.get(raw, str(raw))
        lines = [f"diagnostics '{status.name}': {level}, {status.message}"]
        lines.extend(f"  {kv.key}: {kv.value}" for kv in status.values)
        return lines

    def close(self) -> None:
        self.writer.shutdown(wait=True)


def make_sink_node(recorder: Recorder):
    """The segpp_sink node: subscriptions feeding ``recorder`` and a 1 s progress/exit timer."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.task import Future
    from segpp.msg import LabelPalette, PersonKeypointsArray
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    prefix = recorder.settings.prefix

    class SinkNode(Node):
        def __init__(self) -> None:
            super().__init__("segpp_sink")
            # best effort matches best-effort and reliable publishers; depth 5 absorbs the
            # label/colour/overlay burst of one frame
            sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            for topic in IMAGE_TOPICS:
                self.create_subscription(Image, f"{prefix}/{topic}", self._image_callback(topic), sensor)
            self.create_subscription(LabelInfo, f"{prefix}/label_info", recorder.on_label_info, latched)
            self.create_subscription(LabelPalette, f"{prefix}/palette", recorder.on_palette, latched)
            self.create_subscription(PersonKeypointsArray, f"{prefix}/keypoints", self._on_keypoints, 10)
            self.create_subscription(DiagnosticArray, "/diagnostics", recorder.on_diagnostics, 10)
            self.result = Future()  # the exit code
            self.create_timer(0.1, self._check_done)
            self.create_timer(1.0, self._progress)

        def _image_callback(self, topic: str):
            def callback(msg: Image) -> None:
                recorder.on_image(topic, msg, self.get_clock().now().nanoseconds)
                if recorder.finished():
                    self._finish(0)
            return callback

        def _on_keypoints(self, msg: Any) -> None:
            recorder.on_keypoints(msg, self.get_clock().now().nanoseconds)

        def _check_done(self) -> None:
            if recorder.finished():
                self._finish(0)
            elif recorder.timed_out():
                print(f"segpp-sink: no frame on {prefix}/{{label,color,overlay}} within {recorder.settings.timeout:g} s",
                      file=sys.stderr, flush=True)
                self._finish(1)

        def _progress(self) -> None:
            if recorder.frames:
                print(recorder.progress_line(), flush=True)

        def _finish(self, code: int) -> None:
            if not self.result.done():
                self.result.set_result(code)

    return SinkNode()
