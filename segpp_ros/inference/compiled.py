"""A model's forward pass compiled by OpenVINO, one compiled model per (input shape, merge
configuration), and its ONNX export (no ROS).

A SegFormer++ model goes to OpenVINO through ONNX: PyTorch's exporter (torch.export) writes the
forward pass of one merge configuration at one input size as a static graph; OpenVINO reads it
and compiles it for the CPU. Token merging stays in the graph: its matching is a gather of the
sources and destinations, a matmul, a max, a TopK of fixed length and a prefix sum; its grouped
means are scatter-adds of whole token rows with counts (segpp_ros.model.merge).

``OpenVINOForward`` replaces the model's forward pass: called with an input, it runs the compiled
model of that input's shape and the model's current merge configuration (``model.set_merge``
switches live; nothing is reloaded). A key seen for the first time is compiled on first use, or,
with ``background``, on a thread of its own while the frames of that key run eagerly in PyTorch
(a robot's node never stalls for a compilation). At most ``max_models`` compiled models are kept
(least recently used dropped). Exports are written to the cache folder under a name made of
everything they depend on (the weights' digest, shape, merge configuration, versions), and
OpenVINO caches its compiled blobs there too (``CACHE_DIR``), so a restart, a respawn or a test run
compiles nothing again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

from ..model import MergeConfig, SegFormerPP

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino", "inductor")
# torch.export keeps tracing state in globals: two exports at once (the segmentation and the pose
# model compiling in the background together) break each other, so one runs at a time per process
_EXPORT_LOCK = threading.Lock()
OPSET = 18
# OpenVINO's CPU plugin runs a float32 graph in these precisions (bf16 on CPUs with AVX512-BF16 or AMX)
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def cache_root() -> Path:
    """Where exports and compiled blobs are kept: $SEGPP_CACHE_DIR, else segpp/ under the user's
    cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get("SEGPP_CACHE_DIR"):
        return Path(os.environ["SEGPP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segpp"


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a model's parameters and buffers (names, shapes, values): what an export of
    it depends on besides shape and merging."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def model_metadata(model: SegFormerPP, merge: MergeConfig, shape: Sequence[int]) -> dict[str, str]:
    """What an exported file carries beside the graph (ONNX metadata_props): task, variant,
    merge configuration, input shape, and the class names or keypoint names."""
    meta = {"producer": "segpp", "task": "pose" if model.task == "pose" else "seg", "variant": model.spec.name,
            "merge": json.dumps(merge.to_dict()), "input_shape": json.dumps(list(shape)),
            "normalisation": "RGB 0..255, mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375)"}
    if model.classes:
        meta["classes"] = json.dumps(list(model.classes))
    if getattr(model, "keypoints", None):
        meta["keypoints"] = json.dumps(list(model.keypoints))
    return meta


def export_onnx(model: SegFormerPP, shape: Sequence[int], path: str | os.PathLike,
                merge: MergeConfig | str | Mapping[str, Any] | None = None) -> Path:
    """Write the forward pass of ``model`` (float32, ``merge`` or its current configuration) at
    input ``shape`` [B, 3, H, W] as an ONNX file (opset 18, static shapes, metadata as
    ``model_metadata``). The model is left with the configuration it had."""
    import onnx

    before = model.merge
    if merge is not None:
        model.set_merge(merge)
    try:
        x = torch.zeros(tuple(shape), dtype=torch.float32, device=next(model.parameters()).device)
        with torch.inference_mode():
            # eagerly first: the merge strategies' index tables are built (and cached) outside
            # the exporter's tracing, so they enter the graph as constants
            model(x)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _quiet_exporter():
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                        output_names=["logits" if model.task != "pose" else "heatmaps"],
                                        external_data=False, verbose=False)
        proto = program.model_proto
        for key, value in model_metadata(model, model.merge, shape).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        tmp = path.with_name(path.name + ".tmp")
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)               # never a half-written file under the final name
        return path
    finally:
        model.set_merge(before)


class _quiet_exporter:
    """PyTorch's ONNX exporter prints progress and warnings: keep them out of a node's log."""

    def __enter__(self) -> None:
        self._level = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        import warnings
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._warnings.__exit__(*exc)
        logging.getLogger("torch.onnx").setLevel(self._level)


@dataclass(frozen=True)
class CompileRecord:
    """One compilation: its key (shape, merge name), seconds to export, seconds to compile,
    and whether the export came from the cache folder."""

    shape: tuple[int, ...]
    merge: str
    export_s: float
    compile_s: float
    cached_export: bool


class OpenVINOForward:
    """forward(x) of ``model`` through OpenVINO (see the module docstring).

    ``key()``: what besides the input shape selects a compiled model (the merge configuration).
    ``precision``: 'fp32' or 'bf16' (the compiled model's inference precision). ``threads``: the
    CPU threads of an inference (0: OpenVINO's default).
    """

    def __init__(self, model: SegFormerPP, key: Callable[[], MergeConfig], precision: str = "fp32", threads: int = 0,
                 max_models: int = 8, background: bool = False, cache_dir: str | os.PathLike | None = None) -> None:
        import openvino as ov

        if precision not in OV_PRECISIONS:
            raise ValueError(f"backend 'openvino' runs precision {' or '.join(OV_PRECISIONS)} on the CPU, not "
                             f"{precision!r}")
        self.model = model
        self._key = key
        self.precision = precision
        self.threads = threads
        self.max_models = max_models
        self.background = background
        self.cache = Path(cache_dir) if cache_dir is not None else cache_root() / "openvino"
        self.core = ov.Core()
        self.core.set_property({"CACHE_DIR": str(self.cache / "compiled")})
        self._digest = weights_digest(model)
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        # one daemon thread compiles in the background: a process that is asked to stop does not
        # wait for an export in progress
        self._queue: queue.SimpleQueue[tuple[Hashable, Future] | None] | None = None
        if background:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._compile_queued, name="segpp-openvino", daemon=True).start()
        # exported from a copy of the model: an export sets its merge configuration, while the
        # original may be running another one eagerly on another thread
        self._exporter = copy.deepcopy(model) if background else model
        self.records: list[CompileRecord] = []
        self.failures: dict[Hashable, str] = {}
        self.eager_calls = 0

    # -- calls --------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        merge = self._key()
        key = (tuple(x.shape), merge)
        compiled = self._compiled(key)
        if compiled is None:
            self.eager_calls += 1
            return self.model(x)
        out = compiled(np.ascontiguousarray(x.detach().float().cpu().numpy()))[0]
        return torch.from_numpy(out).to(x.dtype)

    def precompile(self, shape: Sequence[int], merges: Sequence[MergeConfig]) -> None:
        """Compile (or queue, in the background) the models of ``merges`` at input ``shape``."""
        for merge in merges:
            self._compiled((tuple(shape), merge), wait=not self.background)

    def wait(self) -> None:
        """Until every queued compilation has finished (tests, benchmarks)."""
        for future in list(self._pending.values()):
            future.result()

    def close(self) -> None:
        """No more background compilations (one in progress finishes or dies with the process)."""
        if self._queue is not None:
            self._queue.put(None)

    def _compile_queued(self) -> None:
        assert self._queue is not None
        while (job := self._queue.get()) is not None:
            key, future = job
            future.set_result(self._build(key))

    # -- what is compiled ------------------------------------------------------------------------------
    @property
    def compiled(self) -> int:
        with self._lock:
            return len(self._models)

    @property
    def compiling(self) -> int:
        with self._lock:
            return sum(1 for f in self._pending.values() if not f.done())

    def status(self) -> str:
        """'3 compiled, 1 compiling, last 7.9 s' for diagnostics."""
        last = f", last {self.records[-1].export_s + self.records[-1].compile_s:.1f} s" if self.records else ""
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"{self.compiled} compiled, {self.compiling} compiling{failed}{last}"

    def _compiled(self, key: Hashable, wait: bool | None = None) -> Any | None:
        """The compiled model of ``key``, compiling it (now, or queued in the background); None
        while it is being compiled in the background or after it failed (eager then)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            if key in self.failures:
                return None
            future = self._pending.get(key)
            start_here = False
            if future is None:
                future = self._pending[key] = Future()
                if self._queue is not None:
                    self._queue.put((key, future))
                else:
                    start_here = True
        if start_here:
            try:
                future.set_result(self._build(key))
            except BaseException as err:  # noqa: BLE001 -- recorded; the key runs eagerly
                future.set_exception(err)
        if wait if wait is not None else not self.background:
            try:
                future.result()
            except Exception:  # noqa: BLE001 -- recorded in failures by _build
                pass
        with self._lock:
            return self._models.get(key)

    def _build(self, key: Hashable) -> None:
        shape, merge = key
        try:
            path = self.cache / "exports" / f"{self._name(shape, merge)}.onnx"
            start = time.perf_counter()
            cached = path.exists()
            if not cached:
                with _EXPORT_LOCK, torch.inference_mode(False):
                    export_onnx(self._exporter, shape, path, merge)
            exported = time.perf_counter()
            config = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[self.precision], "NUM_STREAMS": 1,
                      "PERFORMANCE_HINT": "LATENCY"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
            compiled = self.core.compile_model(self.core.read_model(str(path)), "CPU", config)
            done = time.perf_counter()
        except Exception as err:  # noqa: BLE001 -- any failure: this key runs eagerly, said once
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            with self._lock:
                self.failures[key] = reason
                self._pending.pop(key, None)
            log.warning("OpenVINO could not compile input %s merge '%s' (%s); that case runs in PyTorch",
                        shape, merge.name, reason)
            return
        record = CompileRecord(tuple(shape), merge.name, round(exported - start, 2), round(done - exported, 2), cached)
        with self._lock:
            self._models[key] = compiled
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            self._pending.pop(key, None)
            self.records.append(record)
        log.info("OpenVINO compiled input %s merge '%s' in %.1f s (export %.1f s%s, compile %.1f s)", tuple(shape),
                 merge.name, record.export_s + record.compile_s, record.export_s,
                 ", from the cache" if cached else "", record.compile_s)

    def _name(self, shape: Sequence[int], merge: MergeConfig) -> str:
        import openvino as ov

        parts = json.dumps([self._digest, list(shape), merge.to_dict(), torch.__version__, ov.__version__, OPSET],
                           sort_keys=True)
        return f"{self.model.spec.name}-{'x'.join(map(str, shape))}-{merge.name}-" + \
            hashlib.sha256(parts.encode()).hexdigest()[:16]


def backend_text(wrapper: Any) -> str:
    """'torch', or 'openvino (3 compiled, 1 compiling, last 7.9 s)' for a Segmenter or
    PoseEstimator (diagnostics)."""
    status = getattr(wrapper.forward, "status", None)
    return f"{wrapper.backend} ({status()})" if status is not None else wrapper.backend


def resolve_backend(backend: str, device: torch.device) -> str:
    """'torch', 'openvino' or 'inductor' for ``backend`` on ``device`` ('auto': see docs/benchmarks.md)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openvino" and device.type != "cpu":
        raise ValueError(f"backend 'openvino' runs on the CPU; device is {device} (use backend 'torch' or 'auto')")
    if backend == "auto":
        return AUTO_CPU_BACKEND if device.type == "cpu" else "torch"
    return backend


# what 'auto' takes on the CPU: see docs/benchmarks.md, "A compiled backend"
AUTO_CPU_BACKEND = "openvino"
