"""Measurement helpers shared by the benchmark, fidelity and training tools."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock time measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """(result, milliseconds) of one call, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - start) * 1000


class DeviceTimer:
    """Time of queued device work without waiting for it: on CUDA two events around the work,
    read (``ms()``) after something else synchronised anyway (the frame's one result copy); on
    the CPU the wall clock."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
        self._t0 = self._t1 = 0.0

    def start(self) -> None:
        if self._cuda:
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._cuda:
            self._end.record()
        else:
            self._t1 = time.perf_counter()

    def ms(self) -> float:
        if self._cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end)
        return (self._t1 - self._t0) * 1000


def rotated(items: Sequence[T], k: int) -> list[T]:
    """items rotated left by k: interleaved rounds start with a different entry each time,
    so drift of a shared machine hits every entry alike."""
    k %= len(items)
    return list(items[k:]) + list(items[:k])


@contextlib.contextmanager
def on_stream(stream: "torch.cuda.Stream | None") -> Iterator[None]:
    """A frame's device section: ``stream`` as the current CUDA stream (a Segmenter's or
    PoseEstimator's own), held shared against graph captures (graphs.DEVICE_SECTIONS: no capture
    runs while a frame uploads, allocates or synchronises); nothing without one (the CPU)."""
    if stream is None:
        yield
        return
    from .graphs import DEVICE_SECTIONS

    with DEVICE_SECTIONS.shared(), torch.cuda.stream(stream):
        yield


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines (written straight to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak bytes allocated during one call of fn, above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        with _quiet_native_stderr(), torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
    except (AttributeError, RuntimeError):
        return None
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (what README figures are pasted from)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
