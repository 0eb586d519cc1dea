"""CUDA graphs of a model's forward pass, one per (padded input shape, dtype, merge configuration).

A SegFormer++ forward pass is hundreds of small kernels; on a GPU, launching them costs as much
as running them at small inputs. A CUDA graph records the launches once and replays them with
one call. How this module keeps graphs right with two models on two threads (segmentation and
pose, each with its own GraphedForward):

- **Capture between frames, on the owning thread, alone.** A call with a key that has no graph
  yet runs eagerly and queues the key; ``capture_pending()``, which the frame pipeline calls
  after the frame's step (outside the latency budget's measured time and outside any device
  section), captures it. A capture holds DEVICE_SECTIONS exclusively: every frame's device work
  (upload, forward, the one synchronisation; ``timing.on_stream``) holds it shared, so the
  other thread's cudaMalloc, pinned allocation or sync can never run while a stream captures,
  and the two models' frames still run side by side. (Capturing inside a frame instead would
  have to upgrade a shared hold to an exclusive one, which deadlocks two threads that both try.)
  Captures use thread-local capture mode and a stream of their own per GraphedForward.
- **A failed capture is retried** after RETRY_AFTER more calls of that key, up to CAPTURE_TRIES
  times in all; only then does the key stay eager (logged with each reason).
- **Graphs own what they read.** A graph replays raw device pointers. Each entry keeps strong
  references to its static input and output and to every merge index table the captured pass
  used (``model.merge.retain_tables``), so no cache eviction can free memory a live graph
  reads.
- **Few keys.** The batch is padded to the next size of ``batch_sizes`` (1, 2, 4, 8, ...; the
  padded rows repeat the last real one and are sliced off the output), so person counts and
  camera counts share graphs. The graphs of one GraphedForward share one memory pool.

The output of a replay lives in the graph's static buffer: the caller must be done with it
before the next call with the same key (the Segmenter and PoseEstimator reduce it at once).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Sequence

import torch

from ..model.merge import retain_tables

log = logging.getLogger(__name__)
WARMUP_PASSES = 3
CAPTURE_TRIES = 3        # captures of one key before it stays eager
RETRY_AFTER = 50         # calls of a key between a failed capture and the next try
# graphs kept per model: every (padded batch, size) of a few presets and the budget's steps; they
# share the model's memory pool, so one more costs its static input and output
MAX_GRAPHS = 24
BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)   # cameras, person crops (x2 with flip test)


class DeviceSections:
    """A readers-writer gate over the device: frames' device work holds it shared (many at
    once), a graph capture exclusively (alone). A waiting capture goes before new frames, so a
    steady stream of frames cannot starve it. Reentrant per thread for shared holds; a thread
    that holds it shared must not ask for it exclusively (RuntimeError: it would deadlock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared: dict[int, int] = {}       # thread id -> depth
        self._exclusive: int | None = None      # the capturing thread
        self._waiting = 0                       # captures waiting

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._exclusive != me and not self._shared.get(me):
                while self._exclusive is not None or self._waiting:
                    self._cond.wait()
            self._shared[me] = self._shared.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._shared[me] -= 1
                if not self._shared[me]:
                    del self._shared[me]
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._shared.get(me):
                raise RuntimeError("a graph capture was started inside a device section of the same thread: "
                                   "capture between frames (GraphedForward.capture_pending), never during one")
            self._waiting += 1
            try:
                while self._exclusive is not None or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = me
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = None
                self._cond.notify_all()


DEVICE_SECTIONS = DeviceSections()


def padded_batch(n: int, sizes: Sequence[int] = BATCH_SIZES) -> int:
    """The batch a graph runs for ``n`` inputs: the smallest of ``sizes`` >= n (n itself beyond)."""
    return next((s for s in sizes if s >= n), n)


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """[n, ...] -> [size, ...]: the last row repeated (a real input: no NaN from zero tokens)."""
    n = x.shape[0]
    return x if size == n else torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])


@dataclass
class Graph:
    """A captured graph and everything its replay reads or writes (kept alive with it)."""

    replay: Callable[[], None]
    static_in: torch.Tensor
    static_out: torch.Tensor
    tables: list[torch.Tensor] = field(default_factory=list)


def capture_cuda(model: torch.nn.Module, static_in: torch.Tensor, stream: Any, pool: Any) -> tuple[Callable[[], None],
                                                                                                    torch.Tensor]:
    """Warm-up passes on ``stream`` (cuDNN's autotuning and first allocations must not happen
    during capture), then the capture in thread-local mode into ``pool``: (replay, static output)."""
    stream.wait_stream(torch.cuda.current_stream(static_in.device))
    with torch.cuda.stream(stream):
        for _ in range(WARMUP_PASSES):
            model(static_in)
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
        static_out = model(static_in)
    return graph.replay, static_out


def capture_emulated(model: torch.nn.Module, static_in: torch.Tensor, stream: Any,
                     pool: Any) -> tuple[Callable[[], None], torch.Tensor]:
    """A CPU stand-in for capture_cuda with a graph's contract (a static input read and a static
    output overwritten by each replay): what tools/gpu-check --dry-run and the CPU tests drive
    GraphedForward's bookkeeping with (keys, padding, retries, locking, what entries keep)."""
    static_out = model(static_in).clone()

    def replay() -> None:
        static_out.copy_(model(static_in))
    return replay, static_out


class GraphedForward:
    """forward(x) of ``model`` through cached CUDA graphs (eager on the CPU or when disabled)."""

    def __init__(self, model: torch.nn.Module, key: Callable[[], Hashable], enabled: bool = True,
                 max_graphs: int = MAX_GRAPHS, batch_sizes: Sequence[int] = BATCH_SIZES,
                 capture: Callable[..., tuple[Callable[[], None], torch.Tensor]] = capture_cuda,
                 on_device: Callable[[torch.Tensor], bool] = lambda x: x.is_cuda,
                 sections: DeviceSections = DEVICE_SECTIONS) -> None:
        """key(): what besides the input shape and dtype selects a graph (the merge configuration).
        ``capture``, ``on_device`` and ``sections``: CUDA's, unless a test drives the bookkeeping
        on the CPU through a stand-in capture."""
        self.model = model
        self._key = key
        self.enabled = enabled
        self.batch_sizes = tuple(batch_sizes)
        self._capture = capture
        self._on_device = on_device
        self._sections = sections
        self._graphs: OrderedDict[Hashable, Graph] = OrderedDict()
        self._max = max_graphs
        self._pending: dict[Hashable, torch.Tensor] = {}
        self._tries: dict[Hashable, int] = {}
        self._wait: dict[Hashable, int] = {}          # calls left before a failed key is tried again
        self.failures: dict[Hashable, list[str]] = {}
        self.captures = 0                              # graphs captured so far (re-captures included)
        self.cold = False                              # the last call ran a key with no graph yet
        self._stream: Any = None
        self._pool: Any = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.cold = False
        if not (self.enabled and self._on_device(x)):
            return self.model(x)
        n = x.shape[0]
        size = padded_batch(n, self.batch_sizes)
        key = ((size, *x.shape[1:]), x.dtype, self._key())
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            # the padding rows keep the real frame they were captured with: rows never mix
            graph.static_in[:n].copy_(x)
            graph.replay()
            return graph.static_out[:n]
        self.cold = True
        if self._tries.get(key, 0) < CAPTURE_TRIES:
            if self._wait.get(key, 0) > 0:
                self._wait[key] -= 1
            elif key not in self._pending:
                self._pending[key] = pad_batch(x, size).clone()   # the capture's static input: a real frame
        return self.model(x)

    @property
    def captured(self) -> int:
        return len(self._graphs)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def capture_pending(self) -> int:
        """Capture the keys queued by calls since the last time (the owning thread, between
        frames, outside any device section); returns how many were captured."""
        done = 0
        while self._pending:
            key, static_in = self._pending.popitem()
            if key[2] != self._key():
                continue               # the merge configuration moved on: capture it when it is used
            # inference mode as the frames' passes: the static input is an inference tensor
            with self._sections.exclusive(), retain_tables() as tables, torch.inference_mode():
                try:
                    if self._stream is None and static_in.is_cuda:
                        self._stream = torch.cuda.Stream(device=static_in.device)
                        self._pool = torch.cuda.graph_pool_handle()
                    replay, static_out = self._capture(self.model, static_in, self._stream, self._pool)
                except Exception as err:  # noqa: BLE001 -- a failed capture is retried, then the key stays eager
                    self._failed(key, static_in, f"{type(err).__name__}: {err}")
                    continue
            self._graphs[key] = Graph(replay, static_in, static_out, list(tables))
            self.captures += 1
            done += 1
            while len(self._graphs) > self._max:
                self._graphs.popitem(last=False)
        return done

    def _failed(self, key: Hashable, static_in: torch.Tensor, reason: str) -> None:
        self._tries[key] = self._tries.get(key, 0) + 1
        self.failures.setdefault(key, []).append(reason)
        final = self._tries[key] >= CAPTURE_TRIES
        self._wait[key] = RETRY_AFTER
        log.warning("CUDA graph capture %d of %d failed for input %s %s (%s); %s", self._tries[key], CAPTURE_TRIES,
                    tuple(static_in.shape), static_in.dtype, reason,
                    "that case runs eagerly from now on" if final else f"running eagerly, retried in {RETRY_AFTER} calls")


def after_call(owner: Any) -> None:
    """A Segmenter's or PoseEstimator's call is done (its device section left): note whether it
    ran cold (``last_cold``) and capture what it queued, unless ``defer_capture``."""
    owner.last_cold = bool(getattr(owner.forward, "cold", False))
    if not owner.defer_capture:
        capture_between_frames(owner.forward)


def capture_between_frames(forward: Any) -> bool:
    """After a frame's step: capture what it queued (a GraphedForward's; other forwards have
    nothing to capture). True when the step ran a key cold (eagerly, with no graph yet): its
    time says nothing about the graphed time the latency budget predicts."""
    cold = bool(getattr(forward, "cold", False))
    if isinstance(forward, GraphedForward) and forward.pending:
        forward.capture_pending()
    return cold
