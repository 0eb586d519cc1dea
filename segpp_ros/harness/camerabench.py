"""Several cameras through one node: throughput and latency, batched against one camera at a time
(the measurement behind segpp-camerabench).

Per image size and camera count N, one node process with ``cameras: [cam0, ..., camN-1]``
(segmentation only); this process is the N cameras, each publishing a synthetic street scene
of that size at ``rate_hz``, all cameras at the same instants (as hardware-triggered cameras
do). Rounds alternate the two modes on the same node, set live through ``batch_max``:

  batched         batch_max 8: the frames waiting at a take share one forward pass
  one at a time   batch_max 1: one forward pass per frame, cameras in arrival order

Per round, the first ``settle_s`` after the switch are not counted; then for ``seconds``:
throughput = labels received per second (all cameras), latency = arrival of a label here -
time.time() just before its image was published (one host clock), p50 and p95 over the
round's labels. A camera faster than the node loses frames in its keep-latest slot by design,
so throughput is what the node delivers, and the latency that of the frames it delivered.

DDS must stay on this host: run it inside an isolated network namespace (tools/netns-run).
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..inference import network_size
from ..inference.timing import markdown_table, rotated

NODE_NAME = "segpp_camerabench"
MODES: dict[str, int] = {"batched": 8, "one at a time": 1}     # mode -> batch_max
START_TIMEOUT_S = 180.0
TABLE_HEADER = ("input", "network input", "cameras", "mode", "labels/s (all cameras)", "per camera /s",
                "latency p50 ms", "latency p95 ms", "sent", "answered")


@dataclass(frozen=True)
class Settings:
    """What one run holds fixed."""

    max_side: int = 256
    threads: int = 1
    device: str = "cpu"
    precision: str = "auto"
    rate_hz: float = 15.0        # each camera
    seconds: float = 4.0         # counted per round and mode
    settle_s: float = 1.0        # after each mode switch, not counted
    rounds: int = 2              # per mode
    window_ms: float = 10.0      # batch_window_ms


@dataclass
class ModeRun:
    """The counted samples of one mode at one (size, camera count)."""

    size: tuple[int, int]
    cameras: int
    mode: str
    seconds: float = 0.0
    sent: int = 0
    latency_ms: list[float] = field(default_factory=list)


@dataclass
class Row:
    size: str
    network_input: str
    cameras: int
    mode: str
    labels_per_s: float
    per_camera_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    sent: int
    answered: int


def summarize(run: ModeRun, max_side: int) -> Row:
    h, w = run.size
    nh, nw = network_size(h, w, max_side or None)
    rate = len(run.latency_ms) / run.seconds if run.seconds else float("nan")
    p50, p95 = (np.percentile(run.latency_ms, [50, 95]).tolist() if run.latency_ms else (float("nan"),) * 2)
    return Row(f"{h}x{w}", f"{nh}x{nw}", run.cameras, run.mode, rate, rate / run.cameras, p50, p95, run.sent,
               len(run.latency_ms))


def format_table(rows: Sequence[Row]) -> str:
    return markdown_table(TABLE_HEADER, ([r.size, r.network_input, str(r.cameras), r.mode, f"{r.labels_per_s:.1f}",
                                          f"{r.per_camera_per_s:.1f}", f"{r.latency_p50_ms:.0f}",
                                          f"{r.latency_p95_ms:.0f}", str(r.sent), str(r.answered)] for r in rows))


def speedups(rows: Sequence[Row]) -> list[str]:
    """Per (size, cameras): batched throughput / one-at-a-time throughput, measured in one run."""
    by_key = {(r.size, r.cameras, r.mode): r for r in rows}
    lines = []
    for (size, cameras, mode), row in by_key.items():
        single = by_key.get((size, cameras, "one at a time"))
        if mode == "batched" and single is not None and single.labels_per_s > 0:
            lines.append(f"{size} x {cameras}: {row.labels_per_s / single.labels_per_s:.2f}x")
    return lines


def node_params(settings: Settings, cameras: int) -> dict[str, Any]:
    return {"device": settings.device, "precision": settings.precision, "max_side": settings.max_side,
            "threads": settings.threads, "warmup_frames": 3, "diagnostics_period": 1.0,
            "pose.enable": False, "cameras": [f"cam{i}" for i in range(cameras)],
            "batch_window_ms": settings.window_ms, "batch_max": MODES["batched"]}


class Cameras:
    """N camera publishers of one prepared image message each; the labels' arrival times by frame_id."""

    def __init__(self, probe: Any, image: np.ndarray, count: int) -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header

        from ..ros.conversions import rgb_to_image

        self.probe, self.names = probe, [f"cam{i}" for i in range(count)]
        self.msgs = [rgb_to_image(image, Header(), "rgb8") for _ in self.names]
        self.publishers = [probe.publisher(Image, f"/{name}/image") for name in self.names]
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self._lock = threading.Lock()
        self._count = 0
        for name in self.names:
            probe.subscribe(Image, f"/{NODE_NAME}/{name}/label", callback=self._label)

    def _label(self, arrival: float, msg: Any) -> None:
        with self._lock:
            self.arrived.setdefault(msg.header.frame_id, arrival)

    def tick(self) -> list[str]:
        """One frame on every camera, at this instant; their frame_ids."""
        ids = []
        stamp = self.probe.now_msg()
        for name, msg, publisher in zip(self.names, self.msgs, self.publishers):
            self._count += 1
            msg.header.frame_id, msg.header.stamp = f"{name}#{self._count}", stamp
            self.sent[msg.header.frame_id] = time.time()
            publisher.publish(msg)
            ids.append(msg.header.frame_id)
        return ids

    def stream(self, seconds: float, rate_hz: float) -> list[str]:
        """Every camera at ``rate_hz`` for ``seconds``; the frame_ids sent."""
        ids, start = [], time.monotonic()
        for k in range(max(1, round(seconds * rate_hz))):
            time.sleep(max(0.0, start + k / rate_hz - time.monotonic()))
            ids += self.tick()
        return ids

    def latencies(self, ids: Sequence[str]) -> list[float]:
        with self._lock:
            return [(self.arrived[i] - self.sent[i]) * 1000 for i in ids if i in self.arrived]

    def every_camera_answered(self) -> bool:
        """Whether each camera has had a label back."""
        with self._lock:
            return {i.split("#")[0] for i in self.arrived} == set(self.names)


def run_cameras(image: np.ndarray, count: int, settings: Settings, log_dir: Path) -> list[ModeRun]:
    """Both modes at one (image size, camera count), on one fresh node process."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile

    from .graph import NodeProcess, Probe, diagnostics_status, end_run, set_parameters

    node = NodeProcess(log_dir, node_params(settings, count), {}, name=NODE_NAME, params_file=None)
    probe = Probe(f"{NODE_NAME}_cameras")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=20))
    cameras = Cameras(probe, image, count)
    runs = {mode: ModeRun(tuple(image.shape[:2]), count, mode) for mode in MODES}
    try:
        _wait(lambda: diagnostics_status(probe, f"/{NODE_NAME}"), START_TIMEOUT_S, node, "the node's diagnostics")
        # a frame on every camera until all of them are answered: discovery of the best-effort
        # publishers can take a moment, and the first frames allocate
        _wait(lambda: cameras.every_camera_answered() or cameras.tick() and False, 60.0, node,
              "a label on every camera")
        for r in range(settings.rounds):
            for mode in rotated(list(MODES), r):
                result = set_parameters(probe, NODE_NAME, {"batch_max": MODES[mode]})[0]
                if not result.successful:
                    raise RuntimeError(f"batch_max refused: {result.reason}")
                cameras.stream(settings.settle_s, settings.rate_hz)
                ids = cameras.stream(settings.seconds, settings.rate_hz)
                time.sleep(1.0)                     # the last frames' labels
                latencies = cameras.latencies(ids)
                run = runs[mode]
                run.seconds += settings.seconds
                run.sent += len(ids)
                run.latency_ms += latencies
                print(f"  {image.shape[0]}x{image.shape[1]} x {count} round {r} {mode}: "
                      f"{len(latencies) / settings.seconds:.1f} labels/s, p50 "
                      f"{statistics.median(latencies) if latencies else float('nan'):.0f} ms", flush=True)
    finally:
        end_run(node, probe, None, f"after {count} cameras at {image.shape[0]}x{image.shape[1]}")
    return list(runs.values())


def _wait(condition: Any, timeout: float, node: Any, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if not node.alive():
            raise RuntimeError(f"the node exited while waiting for {what}:\n{node.output()[-3000:]}")
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{node.output()[-3000:]}")
