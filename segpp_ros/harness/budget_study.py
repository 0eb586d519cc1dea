"""The latency budget on a machine whose load changes, measured through the node (behind segpp-budget-study).

The node runs as its own process with ``merge.budget_ms`` set and keypoints off. This process
is its camera, publishing held-out scenes at a fixed rate (frame_id ``scene<i>``), and it
switches a synthetic CPU load on and off: phases of equal length, the first without load, the
load being processes that spin on the CPU. Every label is handed to ``on_label(scene index,
labels, phase)``, which says which merge preset made it (the caller compares it with reference labels
of each preset: exact, no sampling), and is recorded with its latency (header stamp to arrival,
one clock). The node's /diagnostics give, per phase, the frames labelled and the frames over
the budget (its ``budget_missed`` counter: model time, what the budget bounds) and, at the end
of the phase, its predicted time of each ladder step.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..inference.timing import markdown_table

CAMERA_TOPIC = "/budget_cam/image"
NODE_NAME = "segpp_budget"


@dataclass(frozen=True)
class Settings:
    budget_ms: float = 250.0
    rate_hz: float = 3.0
    phase_s: float = 40.0
    phases: int = 5                 # alternating, the first without load
    load_procs: int = 1             # processes spinning while loaded
    threads: int = 2                # the node's inference threads
    max_side: int = 1024
    preset: str = "none"            # the top of the ladder


@dataclass
class Label:
    t_s: float                      # arrival, seconds since the first phase began
    latency_ms: float               # header stamp to arrival
    scene: int
    preset: str
    phase: int


@dataclass
class Phase:
    index: int
    loaded: bool
    frames: int                     # labelled by the node during the phase
    missed: int                     # of which over the budget (model time)
    costs_ms: str                   # the node's predicted time of each step at the phase's end
    presets: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float = float("nan")
    latency_p95_ms: float = float("nan")

    @property
    def met_pct(self) -> float:
        return 100.0 * (self.frames - self.missed) / self.frames if self.frames else float("nan")


def node_params(settings: Settings) -> dict[str, Any]:
    return {"device": "cpu", "threads": settings.threads, "max_side": settings.max_side, "warmup_frames": 2,
            "diagnostics_period": 0.1, "pose.enable": False,
            # every frame counts: the input made reliable, as the camera is, through ROS's QoS overrides
            f"qos_overrides.{CAMERA_TOPIC}.subscription.reliability": "reliable",
            "merge.budget_ms": settings.budget_ms, "merge.preset": settings.preset}


class Load:
    """``procs`` processes spinning on the CPU while on: another program taking the machine."""

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self._running: list[subprocess.Popen] = []

    def on(self) -> None:
        self._running = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.procs)]

    def off(self) -> None:
        for proc in self._running:
            proc.kill()
            proc.wait()
        self._running = []


class Camera(threading.Thread):
    """Publishes the scenes in turn at ``rate_hz``, each with a fresh stamp."""

    def __init__(self, probe: Any, messages: Sequence[Any], rate_hz: float) -> None:
        super().__init__(name="budget-camera", daemon=True)
        from sensor_msgs.msg import Image

        self.probe, self.messages, self.rate_hz = probe, messages, rate_hz
        self.publisher = probe.publisher(Image, CAMERA_TOPIC, reliable=True)
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        next_t = time.monotonic()
        while not self.stop.is_set():
            msg = self.messages[self.sent % len(self.messages)]
            msg.header.stamp = self.probe.now_msg()
            self.publisher.publish(msg)
            self.sent += 1
            next_t += 1.0 / self.rate_hz
            time.sleep(max(0.0, next_t - time.monotonic()))


def run(images: Sequence[np.ndarray], settings: Settings, log_dir: Path,
        on_label: Callable[[int, np.ndarray, int], str],
        progress: Callable[[str], None] = print) -> tuple[list[Label], list[Phase], str]:
    """Run the study; (labels, phases, the node's log). images: RGB [H, W, 3] held-out scenes."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ..ros.conversions import rgb_to_image
    from .graph import NodeProcess, Probe, diagnostics_status, end_run

    messages = [rgb_to_image(im, Header(frame_id=f"scene{i}"), "rgb8") for i, im in enumerate(images)]
    node = NodeProcess(log_dir, node_params(settings), {"image": CAMERA_TOPIC}, name=NODE_NAME)
    probe = Probe("segpp_budget_probe")
    labels: list[Label] = []
    start = time.time()

    def received(arrival: float, msg: Any) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width]
        scene = int(msg.header.frame_id.removeprefix("scene"))
        t = arrival - start
        phase = int(t // settings.phase_s)
        labels.append(Label(round(t, 3), round((arrival - stamp) * 1000, 1), scene, on_label(scene, pixels, phase),
                            phase))

    probe.subscribe(Image, f"/{NODE_NAME}/label", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
                    callback=received)
    probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=50))
    load, camera = Load(settings.load_procs), None
    phases: list[Phase] = []

    def status() -> dict[str, str]:
        found = diagnostics_status(probe, f"/{NODE_NAME}")
        if found is None or not node.alive():
            raise RuntimeError(f"the node stopped answering:\n{node.output()[-3000:]}")
        return found[2]
    try:
        deadline = time.monotonic() + 180
        while diagnostics_status(probe, f"/{NODE_NAME}") is None:
            if time.monotonic() > deadline or not node.alive():
                raise RuntimeError(f"the node did not start:\n{node.output()[-3000:]}")
            time.sleep(0.2)
        camera = Camera(probe, messages, settings.rate_hz)
        before = status()
        start = time.time()
        camera.start()
        for index in range(settings.phases):
            loaded = index % 2 == 1
            if loaded:
                load.on()
            time.sleep(max(0.0, start + (index + 1) * settings.phase_s - time.time()))
            load.off()
            after = status()
            frames = int(after["frames_out"]) - int(before["frames_out"])
            missed = int(after.get("budget_missed", 0)) - int(before.get("budget_missed", 0))
            phases.append(Phase(index, loaded, frames, missed, after.get("budget_costs_ms", "")))
            before = after
            p = phases[-1]
            progress(f"phase {index} ({'loaded' if loaded else 'idle'}): {p.frames} frames, {p.met_pct:.1f}% within "
                     f"{settings.budget_ms:g} ms; predicted ms: {p.costs_ms}")
    finally:
        load.off()
        log = end_run(node, probe, camera, "during the budget study")
    for phase in phases:
        mine = [label for label in labels if label.phase == phase.index]
        for label in mine:
            phase.presets[label.preset] = phase.presets.get(label.preset, 0) + 1
        if mine:
            phase.latency_p50_ms = round(statistics.median(label.latency_ms for label in mine), 1)
            phase.latency_p95_ms = round(float(np.percentile([label.latency_ms for label in mine], 95)), 1)
    return labels, phases, log


def format_phases(phases: Sequence[Phase], settings: Settings) -> str:
    rows = [(str(p.index), "on" if p.loaded else "off", str(p.frames), f"{p.met_pct:.1f}%",
             ", ".join(f"{k} {v}" for k, v in sorted(p.presets.items(), key=lambda kv: -kv[1])),
             f"{p.latency_p50_ms:.0f}", f"{p.latency_p95_ms:.0f}", p.costs_ms) for p in phases]
    return markdown_table(("phase", "load", "labels", f"model time within {settings.budget_ms:g} ms",
                           "presets chosen (labels)", "latency p50 ms", "latency p95 ms",
                           "predicted model ms per step at the end"), rows)


def record(labels: Sequence[Label], phases: Sequence[Phase], settings: Settings,
           extra: dict[str, Any]) -> dict[str, Any]:
    return {"settings": asdict(settings), "phases": [{**asdict(p), "met_pct": round(p.met_pct, 2)} for p in phases],
            "labels": [asdict(label) for label in labels], **extra}


# BGR colours of the ladder steps in the plot, most accurate first
STEP_COLOURS = [(60, 160, 40), (200, 120, 0), (200, 60, 160), (0, 140, 230), (40, 40, 220), (128, 128, 128)]


def plot(labels: Sequence[Label], phases: Sequence[Phase], settings: Settings, ladder: Sequence[str],
         path: Path) -> None:
    """A PNG: label latency against time (top; the budget as a red line, loaded phases shaded)
    and the preset of each label (bottom), one colour per ladder step."""
    import cv2

    width, height, left, right = 1200, 640, 80, 30
    top_box, bottom_box = (40, 400), (440, 600)          # y ranges of the two panels
    img = np.full((height, width, 3), 255, np.uint8)
    t_max = settings.phase_s * len(phases)
    y_max = max([settings.budget_ms * 1.5] + [label.latency_ms for label in labels]) * 1.05

    def x(t: float) -> int:
        return int(left + (width - left - right) * t / t_max)

    def y(ms: float) -> int:
        return int(top_box[1] - (top_box[1] - top_box[0]) * ms / y_max)

    def step_y(step: int) -> int:
        return int(bottom_box[0] + (bottom_box[1] - bottom_box[0]) * (step + 0.5) / len(ladder))

    text = dict(fontFace=cv2.FONT_HERSHEY_SIMPLEX, fontScale=0.45, color=(0, 0, 0), thickness=1,
                lineType=cv2.LINE_AA)
    for phase in phases:
        if phase.loaded:
            x0, x1 = x(phase.index * settings.phase_s), x((phase.index + 1) * settings.phase_s)
            for box in (top_box, bottom_box):
                cv2.rectangle(img, (x0, box[0]), (x1, box[1]), (225, 225, 225), -1)
            cv2.putText(img, f"CPU load on ({settings.load_procs} spinning process)", (x0 + 5, top_box[0] + 15),
                        **text)
    for box in (top_box, bottom_box):
        cv2.rectangle(img, (left, box[0]), (width - right, box[1]), (0, 0, 0), 1)
    for ms in np.arange(0, y_max, 100 if y_max < 1500 else 500):
        cv2.line(img, (left - 4, y(ms)), (left, y(ms)), (0, 0, 0), 1)
        cv2.putText(img, f"{ms:.0f}", (left - 45, y(ms) + 4), **text)
    for t in np.arange(0, t_max + 1e-6, 20):
        cv2.line(img, (x(t), bottom_box[1]), (x(t), bottom_box[1] + 4), (0, 0, 0), 1)
        cv2.putText(img, f"{t:.0f}", (x(t) - 10, bottom_box[1] + 20), **text)
    cv2.putText(img, "time (s)", (width // 2 - 30, height - 8), **text)
    cv2.putText(img, "label latency (ms), header stamp to arrival", (left, top_box[0] - 10), **text)
    cv2.putText(img, "merge preset of each label", (left, bottom_box[0] - 10), **text)
    budget_y = y(settings.budget_ms)
    for x0 in range(left, width - right, 12):
        cv2.line(img, (x0, budget_y), (min(x0 + 6, width - right), budget_y), (0, 0, 230), 2)
    cv2.putText(img, f"budget {settings.budget_ms:g} ms (model time)", (width - right - 230, budget_y - 6),
                **{**text, "color": (0, 0, 230)})
    for i, step in enumerate(ladder):
        cv2.putText(img, step, (left - 75, step_y(i) + 4), **text)
    for label in labels:
        step = ladder.index(label.preset) if label.preset in ladder else len(ladder) - 1
        colour = STEP_COLOURS[min(step, len(STEP_COLOURS) - 1)]
        cv2.circle(img, (x(label.t_s), y(label.latency_ms)), 2, colour, -1, cv2.LINE_AA)
        cv2.circle(img, (x(label.t_s), step_y(step)), 2, colour, -1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
