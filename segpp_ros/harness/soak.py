"""A long run of the node as a robot runs it, watched from outside (the measurement behind segpp-soak).

The node runs as its own process; this process is its camera and its operator. A camera
thread publishes at a fixed rate, cycling through image sizes; now and then it stops and comes
back on a new publisher (a camera driver restarting); an operator changes parameters live
(merge preset, network size, keypoints on/off). Every ``sample_s`` the node's resident memory,
threads and latest /diagnostics are recorded. The summary is what decides whether the node can
be left running: the slope of its memory (least squares over the samples after warm-up, MB per
hour), latency early against late, threads, error counters, and the diagnostics levels seen.
"""
from __future__ import annotations

import itertools
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..inference.timing import markdown_table

CAMERA_TOPIC = "/soak_cam/image"
NODE_NAME = "segpp_soak"
PROBLEM_COUNTERS = ("errors", "publish_errors", "pose_errors", "pose_load_errors", "handler_failures",
                    "worker_restarts")


@dataclass(frozen=True)
class Settings:
    """minutes of running; camera rate; seconds per image size; camera restart and parameter change
    periods; sampling period; minutes of warm-up left out of the memory slope."""

    minutes: float = 30.0
    rate_hz: float = 30.0
    size_period_s: float = 60.0
    camera_restart_s: float = 300.0
    camera_gap_s: float = 5.0
    param_period_s: float = 20.0
    sample_s: float = 5.0
    warmup_min: float = 2.0
    pose: bool = True
    threads: int = 0


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    threads: int
    level: int
    message: str
    frames_in: int
    frames_out: int
    latency_p50_ms: float
    latency_p95_ms: float
    counters: dict[str, int]
    size: str
    params: dict[str, Any] = field(default_factory=dict)


def node_params(settings: Settings) -> dict[str, Any]:
    return {"device": "cpu", "threads": settings.threads, "max_side": 512, "warmup_frames": 2,
            "diagnostics_period": 1.0, "pose.enable": settings.pose}


# the operator's changes, applied in turn: every one a live parameter
CHANGES: list[dict[str, Any]] = [
    {"merge.preset": "fast"}, {"max_side": 384}, {"merge.preset": "2x2"}, {"pose.enable": False},
    {"merge.preset": "hq"}, {"max_side": 640}, {"pose.enable": True}, {"merge.preset": "none"},
    {"max_side": 512}, {"pose.merge.preset": "2x2"}, {"pose.merge.preset": "none"},
]


class Camera(threading.Thread):
    """Publishes the current size's message at ``rate_hz`` with a fresh stamp; ``restart()`` stops
    for a while and comes back on a new publisher."""

    def __init__(self, probe: Any, messages: dict[str, Any], settings: Settings) -> None:
        super().__init__(name="soak-camera", daemon=True)
        self.probe, self.messages, self.settings = probe, messages, settings
        self.sizes = itertools.cycle(list(messages))
        self.size = next(self.sizes)
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.sent = 0
        self.restarts = 0
        self._publisher = self._new_publisher()

    def _new_publisher(self) -> Any:
        from sensor_msgs.msg import Image

        return self.probe.publisher(Image, CAMERA_TOPIC)

    def next_size(self) -> None:
        self.size = next(self.sizes)

    def restart(self) -> None:
        self.paused.set()
        self.probe.node.destroy_publisher(self._publisher)
        time.sleep(self.settings.camera_gap_s)
        self._publisher = self._new_publisher()
        self.restarts += 1
        self.paused.clear()

    def run(self) -> None:
        period = 1.0 / self.settings.rate_hz
        next_t = time.monotonic()
        while not self.stop.is_set():
            if not self.paused.is_set():
                msg = self.messages[self.size]
                msg.header.stamp = self.probe.now_msg()
                try:
                    self._publisher.publish(msg)
                    self.sent += 1
                except Exception:  # noqa: BLE001 -- the publisher is being replaced (restart)
                    pass
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))


def _float(values: dict[str, str], key: str) -> float:
    try:
        return float(values.get(key, "nan"))
    except ValueError:
        return float("nan")


def run(images: Sequence[np.ndarray], settings: Settings, log_dir: Path,
        progress: Any = print) -> tuple[list[Sample], str]:
    """Run the soak; (samples, the node's log). images: RGB [H, W, 3], one per size to cycle."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import QoSProfile
    from std_msgs.msg import Header

    from ..ros.conversions import rgb_to_image
    from .graph import NodeProcess, Probe, diagnostics_status, end_run

    messages = {f"{im.shape[0]}x{im.shape[1]}": rgb_to_image(im, Header(frame_id="soak_camera"), "rgb8")
                for im in images}
    node = NodeProcess(log_dir, node_params(settings), {"image": CAMERA_TOPIC}, name=NODE_NAME)
    probe = Probe("segpp_soak_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=20))
    samples: list[Sample] = []
    camera = None
    try:
        deadline = time.monotonic() + 180
        while diagnostics_status(probe, f"/{NODE_NAME}") is None:
            if time.monotonic() > deadline or not node.alive():
                raise RuntimeError(f"the node did not start:\n{node.output()[-3000:]}")
            time.sleep(0.2)
        client = AsyncParameterClient(probe.node, NODE_NAME)
        client.wait_for_services(timeout_sec=30)
        camera = Camera(probe, messages, settings)
        camera.start()
        start = time.monotonic()
        end = start + settings.minutes * 60
        next_sample = next_size = next_restart = next_change = start
        next_size += settings.size_period_s
        next_restart += settings.camera_restart_s
        next_change += settings.param_period_s
        changes = itertools.cycle(CHANGES)
        applied: dict[str, Any] = {}
        while time.monotonic() < end:
            now = time.monotonic()
            if not node.alive():
                raise RuntimeError(f"the node exited with code {node.proc.returncode}:\n{node.output()[-3000:]}")
            if now >= next_sample:
                status = diagnostics_status(probe, f"/{NODE_NAME}") or (3, "no diagnostics", {})
                level, message, values = status
                counters = {k: int(values[k]) for k in PROBLEM_COUNTERS if k in values}
                samples.append(Sample(round(now - start, 1), round(node.rss_mb(), 1), node.threads(), level, message,
                                      int(values.get("frames_in", 0)), int(values.get("frames_out", 0)),
                                      _float(values, "latency_p50_ms"), _float(values, "latency_p95_ms"), counters,
                                      camera.size, dict(applied)))
                s = samples[-1]
                progress(f"{s.t_s / 60:5.1f} min  rss {s.rss_mb:7.1f} MB  threads {s.threads:3d}  "
                         f"in/out {s.frames_in}/{s.frames_out}  p50 {s.latency_p50_ms:6.1f} ms  size {s.size}  "
                         f"level {s.level}  {s.message[:60]}")
                next_sample += settings.sample_s
            if now >= next_size:
                camera.next_size()
                next_size += settings.size_period_s
            if now >= next_change:
                change = next(changes)
                client.set_parameters([Parameter(k, value=v) for k, v in change.items()])
                applied.update(change)
                next_change += settings.param_period_s
            if now >= next_restart:
                camera.restart()
                next_restart += settings.camera_restart_s
            time.sleep(0.05)
    finally:
        log = end_run(node, probe, camera, "at the end of the soak")
    return samples, log


@dataclass
class Summary:
    minutes: float
    samples: int
    rss_start_mb: float          # first sample after warm-up
    rss_end_mb: float
    rss_max_mb: float
    rss_slope_mb_per_h: float    # least squares over the samples after warm-up
    rss_slope_late_mb_per_h: float  # the same over the second half of them
    threads_min: int
    threads_max: int
    # latency with the same image size and settings, second half against first half (median of
    # the ratios of the sample p50 medians, over the combinations seen in both halves)
    latency_drift: float
    latency_drift_cases: int
    frames_in: int
    frames_out: int
    problems: dict[str, int]     # error counters at the end
    warn_samples: int
    error_samples: int
    error_messages: list[str]


def _slope_mb_per_h(samples: Sequence[Sample]) -> float:
    t = np.array([s.t_s / 3600 for s in samples])
    if len(samples) < 3 or np.ptp(t) == 0:
        return float("nan")
    return float(np.polyfit(t, np.array([s.rss_mb for s in samples]), 1)[0])


def _latency_drift(first: Sequence[Sample], second: Sequence[Sample]) -> tuple[float, int]:
    """Median over (size, settings) seen in both halves of median p50 (second) / median p50 (first):
    latency compared like for like, since it depends on the size and settings of the moment."""
    def by_case(part: Sequence[Sample]) -> dict[tuple, list[float]]:
        cases: dict[tuple, list[float]] = {}
        for s in part:
            if s.latency_p50_ms == s.latency_p50_ms:
                cases.setdefault((s.size, tuple(sorted(s.params.items()))), []).append(s.latency_p50_ms)
        return cases
    a, b = by_case(first), by_case(second)
    ratios = [statistics.median(b[k]) / statistics.median(a[k]) for k in a if k in b]
    return (statistics.median(ratios) if ratios else float("nan")), len(ratios)


def summarize(samples: Sequence[Sample], settings: Settings) -> Summary:
    settled = [s for s in samples if s.t_s >= settings.warmup_min * 60] or list(samples)
    half = len(settled) // 2
    drift, cases = _latency_drift(settled[:half], settled[half:])
    last = samples[-1]
    return Summary(
        minutes=round(samples[-1].t_s / 60, 1), samples=len(samples), rss_start_mb=settled[0].rss_mb,
        rss_end_mb=settled[-1].rss_mb, rss_max_mb=max(s.rss_mb for s in samples),
        rss_slope_mb_per_h=round(_slope_mb_per_h(settled), 1),
        rss_slope_late_mb_per_h=round(_slope_mb_per_h(settled[half:]), 1),
        threads_min=min(s.threads for s in samples), threads_max=max(s.threads for s in samples),
        latency_drift=round(drift, 2), latency_drift_cases=cases,
        frames_in=last.frames_in, frames_out=last.frames_out, problems=dict(last.counters),
        warn_samples=sum(s.level == 1 for s in samples), error_samples=sum(s.level >= 2 for s in samples),
        error_messages=sorted({s.message for s in samples if s.level >= 2}))


def format_summary(summary: Summary) -> str:
    rows = [("duration", f"{summary.minutes:g} min ({summary.samples} samples)"),
            ("resident memory after warm-up", f"{summary.rss_start_mb:.0f} -> {summary.rss_end_mb:.0f} MB "
                                               f"(max {summary.rss_max_mb:.0f} MB)"),
            ("memory slope after warm-up / over its second half", f"{summary.rss_slope_mb_per_h:+.1f} / "
                                                                   f"{summary.rss_slope_late_mb_per_h:+.1f} MB/hour"),
            ("threads", f"{summary.threads_min}..{summary.threads_max}"),
            ("label latency, second half / first half (same size and settings)",
             f"{summary.latency_drift:.2f}x ({summary.latency_drift_cases} combinations)"),
            ("frames in / labelled", f"{summary.frames_in} / {summary.frames_out}"),
            ("error counters at the end", ", ".join(f"{k} {v}" for k, v in summary.problems.items()) or "none"),
            ("samples at WARN / ERROR", f"{summary.warn_samples} / {summary.error_samples}")]
    return markdown_table(("soak", "result"), rows)


def record(samples: Sequence[Sample], summary: Summary, settings: Settings) -> dict[str, Any]:
    return {"settings": asdict(settings), "summary": asdict(summary), "samples": [asdict(s) for s in samples]}


def from_record(data: dict[str, Any]) -> tuple[list[Sample], Settings]:
    """The samples and settings of a recorded run (the JSON of ``record``)."""
    return [Sample(**s) for s in data["samples"]], Settings(**data["settings"])
