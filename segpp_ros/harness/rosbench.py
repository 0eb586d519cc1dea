"""End-to-end latency through ROS against the model's own time (the measurement behind segpp-rosbench).

The segpp node runs as its own process (started like launch_ros starts it); this process
publishes camera images and receives the labels. Per input size, interleaved rounds of

  (a) ROS: K frames, one at a time: e2e = arrival of the label here - time.time() just before
      publish() (one host clock). Each answer is awaited (and a short gap kept) before the next
      frame, so the node is idle when a frame arrives and nothing is dropped; a frame with no
      answer within 5 s counts as lost.
  (b) in-process: K calls of the inference core (segpp_ros.inference.Segmenter) on the same
      RGB image, same max_side and thread count: the model's own time (preprocessing, network,
      logits upsampled to the input size, argmax).

(a) and (b) alternate frame by frame within a round (which goes first alternates by round): on
a shared machine, load bursts of other processes then hit both sides alike.

The first round is warm-up and discarded. overhead = median(e2e) - the node's model_p50_ms
(from /diagnostics: the inference core's own time for the frames the node processed, measured
inside the node), so the model's run-to-run noise on a shared CPU, which differs between two
processes, does not enter it; its p95 is p95(e2e) - the same. "in-node" = the node's
node_overhead_p50_ms (per frame: arrival -> publish inside the node minus that frame's model
time): the node's Python work (hand-off to the worker, conversions, publish calls); "outside" =
median(e2e) - latency_p50_ms:
DDS in and out and rclpy (de)serialization on both sides, this process's publish() included.
The in-process model time is reported beside the node's as a check that they agree. The node's
windows cover every frame it processed, so one node process is started per size (one at a
time); its p50s also include that size's warm-up round.

DDS must stay on this host: run it inside an isolated network namespace (tools/netns-run).
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..inference import network_size
from ..inference.timing import markdown_table, rotated

IMAGE_TOPIC = "/rosbench/image"
LABEL_TOPIC = "/segpp/label"
ANSWER_TIMEOUT_S = 5.0   # a frame unanswered this long is lost
PRIME_TIMEOUT_S = 60.0   # first answer of a fresh node (discovery, first frame at this size)
START_TIMEOUT_S = 180.0  # node process start: imports, weights, warm-up
TARGET_MS = 10.0         # the target: median overhead at 1080p
TABLE_HEADER = ("input", "network input", "model ms in node (p50)", "model ms in-process (median)",
                "e2e ms (median)", "e2e p95", "overhead ms median", "overhead p95", "in-node ms", "outside ms")


# -- summary (pure) ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile, linear interpolation (numpy's default, as the node's diagnostics); NaN if empty."""
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


@dataclass
class Summary:
    """One input size: medians and tails in ms, and losses of the measured rounds."""

    size: str
    network_input: str
    model_ms: float            # median in-process total (the model's own time)
    network_ms: float          # median in-process network time
    e2e_ms: float              # median publish -> label received
    e2e_p95_ms: float
    overhead_ms: float         # median(e2e) - node model_p50 (in-process median without diagnostics)
    overhead_p95_ms: float     # p95(e2e) - the same
    in_node_overhead_ms: float | None  # node_overhead_p50_ms (else node latency_p50_ms - model)
    node_model_p50_ms: float | None
    node_latency_p50_ms: float | None
    node_network_p50_ms: float | None
    outside_node_ms: float | None  # median(e2e) - node latency_p50_ms: DDS in and out, (de)serialization
    publish_call_ms: float | None  # median duration of publish() here (part of e2e)
    frames: int                # answered frames in the measured rounds
    lost: int                  # unanswered frames in the measured rounds


def summarize(size: tuple[int, int], network_input: tuple[int, int], e2e_ms: Sequence[float],
              model_ms: Sequence[float], network_ms: Sequence[float], lost: int = 0,
              node_latency_p50_ms: float | None = None, node_network_p50_ms: float | None = None,
              publish_call_ms: Sequence[float] = (), node_model_p50_ms: float | None = None,
              node_overhead_p50_ms: float | None = None) -> Summary:
    """Figures of one size from its measured samples (warm-up already removed)."""
    model = statistics.median(model_ms) if model_ms else float("nan")
    reference = node_model_p50_ms if node_model_p50_ms is not None else model
    e2e = statistics.median(e2e_ms) if e2e_ms else float("nan")
    e2e_p95 = percentile(e2e_ms, 95)
    in_node = node_overhead_p50_ms
    if in_node is None and node_latency_p50_ms is not None:
        in_node = node_latency_p50_ms - reference
    return Summary(
        size=f"{size[0]}x{size[1]}", network_input=f"{network_input[0]}x{network_input[1]}",
        model_ms=model, network_ms=statistics.median(network_ms) if network_ms else float("nan"),
        e2e_ms=e2e, e2e_p95_ms=e2e_p95, overhead_ms=e2e - reference, overhead_p95_ms=e2e_p95 - reference,
        in_node_overhead_ms=in_node, node_model_p50_ms=node_model_p50_ms, node_latency_p50_ms=node_latency_p50_ms,
        node_network_p50_ms=node_network_p50_ms,
        outside_node_ms=None if node_latency_p50_ms is None else e2e - node_latency_p50_ms,
        publish_call_ms=statistics.median(publish_call_ms) if publish_call_ms else None,
        frames=len(e2e_ms), lost=lost)


def _ms(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def format_table(summaries: Sequence[Summary]) -> str:
    return markdown_table(TABLE_HEADER, ([s.size, s.network_input, _ms(s.node_model_p50_ms), _ms(s.model_ms),
                                          _ms(s.e2e_ms), _ms(s.e2e_p95_ms), _ms(s.overhead_ms),
                                          _ms(s.overhead_p95_ms), _ms(s.in_node_overhead_ms),
                                          _ms(s.outside_node_ms)] for s in summaries))


def target_line(summaries: Sequence[Summary], target_ms: float = TARGET_MS) -> str | None:
    """Verdict on the issue's target for the 1080p row (None without one)."""
    for s in summaries:
        if s.size == "1080x1920":
            verdict = "met" if s.overhead_ms <= target_ms else "NOT met"
            return f"target: median overhead at 1080p <= {target_ms:g} ms: {s.overhead_ms:.1f} ms, {verdict}"
    return None


def measured(rounds: Sequence[Sequence[float]]) -> list[float]:
    """Samples of every round but the first (warm-up)."""
    return [v for r in rounds[1:] for v in r]


# -- measurement ------------------------------------------------------------------------------------
@dataclass
class SizeRun:
    """Raw samples of one size, one list per round (round 0 is warm-up)."""

    size: tuple[int, int]
    e2e_ms: list[list[float]] = field(default_factory=list)
    publish_call_ms: list[list[float]] = field(default_factory=list)
    model_ms: list[list[float]] = field(default_factory=list)
    network_ms: list[list[float]] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    diagnostics: dict[str, str] | None = None


class NodeFailed(RuntimeError):
    pass


def _stamp_s(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _find_answer(probe: Any, frame_id: str) -> float | None:
    for arrived, msg in reversed(probe.timed_messages(LABEL_TOPIC)):
        if msg.header.frame_id == frame_id:
            return arrived
    return None


def _wait(condition: Any, timeout: float, node: Any, what: str, poll: float = 0.001) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None or time.monotonic() > deadline:
            return result
        if not node.alive():
            raise NodeFailed(f"the node exited while waiting for {what}:\n{node.output()[-3000:]}")
        time.sleep(poll)


def _compiled(values: dict[str, str] | None) -> str | None:
    """The node's backend status once it holds a compiled model and compiles nothing (None before)."""
    backend = (values or {}).get("backend", "")
    return backend if " 0 compiling" in backend and "(0 compiled" not in backend else None


def _fresh_diagnostics(probe: Any, after: float) -> dict[str, str] | None:
    """Key/values of the node's newest status stamped after ``after`` (time.time())."""
    for msg in reversed(probe.messages("/diagnostics")):
        if _stamp_s(msg.header.stamp) <= after:
            return None
        for status in msg.status:
            if status.name.startswith("/segpp:"):
                return {kv.key: kv.value for kv in status.values}
    return None


class Sender:
    """Publishes one image message with a fresh stamp and a unique frame_id, awaits its label."""

    def __init__(self, probe: Any, publisher: Any) -> None:
        self.probe, self.publisher, self.count = probe, publisher, 0

    def send(self, msg: Any) -> tuple[str, float, float]:
        """(frame_id, time.time() before publish(), duration of the publish() call in ms)."""
        self.count += 1
        msg.header.frame_id = f"rosbench_{self.count}"
        msg.header.stamp = self.probe.now_msg()
        start = time.time()
        self.publisher.publish(msg)
        return msg.header.frame_id, start, (time.time() - start) * 1000

    def prime(self, msg: Any, node: Any) -> None:
        """Until a first answer: a fresh node may miss best-effort frames until discovery settles."""
        deadline = time.monotonic() + PRIME_TIMEOUT_S
        while time.monotonic() < deadline:
            frame_id, _, _ = self.send(msg)
            if _wait(lambda fid=frame_id: _find_answer(self.probe, fid), 1.0, node, "the first label") is not None:
                return
        raise NodeFailed(f"no label on {LABEL_TOPIC} within {PRIME_TIMEOUT_S:.0f} s:\n{node.output()[-3000:]}")


def ros_frame(sender: Sender, msg: Any, node: Any) -> tuple[float, float] | None:
    """(e2e ms, publish() ms) of one frame, or None when its label did not come back in time."""
    frame_id, start, call_ms = sender.send(msg)
    arrived = _wait(lambda: _find_answer(sender.probe, frame_id), ANSWER_TIMEOUT_S, node, "a label")
    return None if arrived is None else ((arrived - start) * 1000, call_ms)


def run_round(run: SizeRun, r: int, sender: Sender, msg: Any, node: Any, segmenter: Any, image: np.ndarray,
              frames: int, gap_s: float) -> None:
    """One round: ``frames`` ROS frames and as many in-process calls, alternating one by one (which of
    the two goes first alternates by round), so load from other processes hits both alike."""
    e2e, publish_ms, total, network, lost = [], [], [], [], 0
    for _ in range(frames):
        for part in rotated(["ros", "inprocess"], r):
            if part == "ros":
                sample = ros_frame(sender, msg, node)
                if sample is None:
                    lost += 1
                else:
                    e2e.append(sample[0])
                    publish_ms.append(sample[1])
            else:
                result = segmenter(image)
                total.append(result.total_ms)
                network.append(result.network_ms)
            time.sleep(gap_s)
    run.e2e_ms.append(e2e)
    run.publish_call_ms.append(publish_ms)
    run.model_ms.append(total)
    run.network_ms.append(network)
    run.lost.append(lost)


COMPILE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Settings:
    """What one benchmark run holds fixed: the node's network size and threads, rounds per size,
    frames per round, and the pause after each answer."""

    max_side: int = 256
    threads: int = 1
    device: str = "cpu"
    precision: str = "auto"
    backend: str = "torch"
    rounds: int = 5
    frames_per_round: int = 6
    gap_ms: float = 50.0


def node_params(settings: Settings) -> dict[str, Any]:
    # segmentation only: keypoints run after the label is published and would hold the next frame
    return {"device": settings.device, "precision": settings.precision, "backend": settings.backend,
            "max_side": settings.max_side, "threads": settings.threads, "warmup_frames": 3,
            "diagnostics_period": 1.0, "output_resolution": "input", "pose.enable": False}


def run_size(image: np.ndarray, settings: Settings, probe: Any, sender: Sender, segmenter: Any,
             log_dir: Path) -> SizeRun:
    """All rounds of one camera image size through a fresh node process (image: RGB [H, W, 3])."""
    from std_msgs.msg import Header

    from ..ros.conversions import rgb_to_image
    from .graph import NodeProcess

    h, w = image.shape[:2]
    msg = rgb_to_image(image, Header(), "rgb8")
    run = SizeRun((h, w))
    gap = settings.gap_ms / 1000
    started = time.time()
    node = NodeProcess(log_dir, node_params(settings), {"image": IMAGE_TOPIC}, params_file=None)
    try:
        _wait(lambda: _fresh_diagnostics(probe, started), START_TIMEOUT_S, node, "the node's first diagnostics",
              poll=0.1)
        if _fresh_diagnostics(probe, started) is None:
            raise NodeFailed(f"the node sent no diagnostics within {START_TIMEOUT_S:.0f} s:\n{node.output()[-3000:]}")
        sender.prime(msg, node)
        if settings.backend != "torch":
            # the node compiles this size in the background, its frames run in PyTorch meanwhile:
            # measure the compiled model, once it is there
            if _wait(lambda: _compiled(_fresh_diagnostics(probe, started)), COMPILE_TIMEOUT_S, node,
                     "the node's compiled model", poll=0.5) is None:
                raise NodeFailed(f"the node compiled no model within {COMPILE_TIMEOUT_S:.0f} s:\n"
                                 f"{node.output()[-3000:]}")
        for r in range(settings.rounds):
            run_round(run, r, sender, msg, node, segmenter, image, settings.frames_per_round, gap)
            e2e_med = statistics.median(run.e2e_ms[-1]) if run.e2e_ms[-1] else float("nan")
            print(f"  {h}x{w} round {r}{' (warm-up)' if r == 0 else ''}: e2e median {e2e_med:.1f} ms, "
                  f"model median {statistics.median(run.model_ms[-1]):.1f} ms, lost {run.lost[-1]}", flush=True)
        last_answer = time.time()
        run.diagnostics = _wait(lambda: _fresh_diagnostics(probe, last_answer), 5.0, node,
                                "diagnostics after the last frame", poll=0.05)
    finally:
        code = node.stop()
        if code not in (0, None):
            print(f"segpp-rosbench: the {h}x{w} node exited with code {code}; log: {node.log}", file=sys.stderr)
    return run


def _float(values: dict[str, str] | None, key: str) -> float | None:
    try:
        return float(values[key]) if values and key in values else None
    except ValueError:
        return None


def summary_of(run: SizeRun, max_side: int) -> Summary:
    return summarize(run.size, network_size(*run.size, max_side or None), measured(run.e2e_ms),
                     measured(run.model_ms), measured(run.network_ms), lost=sum(run.lost[1:]),
                     node_latency_p50_ms=_float(run.diagnostics, "latency_p50_ms"),
                     node_network_p50_ms=_float(run.diagnostics, "network_p50_ms"),
                     publish_call_ms=measured(run.publish_call_ms),
                     node_model_p50_ms=_float(run.diagnostics, "model_p50_ms"),
                     node_overhead_p50_ms=_float(run.diagnostics, "node_overhead_p50_ms"))


def report(summaries: Sequence[Summary], runs: Sequence[SizeRun], settings: Settings, model: str,
           torch_threads: int) -> str:
    """The table and the lines that explain it (what segpp-rosbench prints)."""
    lines = ["", format_table(summaries), "",
             f"device {settings.device}, precision {settings.precision}, backend {settings.backend}, "
             f"threads {settings.threads} (node and "
             f"in-process; torch uses {torch_threads}), "
             f"max_side {settings.max_side}, {model}; {settings.rounds - 1} measured rounds x "
             f"{settings.frames_per_round} frames per size (first round discarded), gap {settings.gap_ms:g} ms",
             "lost (measured rounds): " + ", ".join(
                 f"{s.size} {s.lost}/{s.lost + s.frames} (warm-up round {run.lost[0]})"
                 for s, run in zip(summaries, runs)),
             "node vs in-process network p50 ms (same threads?): " + ", ".join(
                 f"{s.size} {_ms(s.node_network_p50_ms)} vs {_ms(s.network_ms)}" for s in summaries),
             "outside the node (e2e median - node latency_p50: DDS in and out, rclpy (de)serialization), of which "
             "publish() here: " + ", ".join(f"{s.size} {_ms(s.outside_node_ms)} ms ({_ms(s.publish_call_ms)} ms)"
                                           for s in summaries),
             "overhead = e2e - the node's own model time (model_p50_ms on /diagnostics) for the same frames"]
    line = target_line(summaries)
    if line:
        lines.append(line)
    return "\n".join(lines)


def samples_record(runs: Sequence[SizeRun]) -> list[dict[str, Any]]:
    """Every raw sample of every size, for the JSON file."""
    return [{"size": f"{r.size[0]}x{r.size[1]}", "rounds": "round 0 is warm-up", "e2e_ms": r.e2e_ms,
             "publish_call_ms": r.publish_call_ms, "model_total_ms": r.model_ms, "network_ms": r.network_ms,
             "lost": r.lost, "node_diagnostics": r.diagnostics} for r in runs]
