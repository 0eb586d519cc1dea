"""CUDA graphs of a model's forward pass, one per (input shape, dtype, merge configuration).

A SegFormer++ forward pass is hundreds of small kernels; on a GPU, launching them costs as much
as running them at small inputs. A CUDA graph records the launches once and replays them with
one call. Graphs are captured after warm-up passes on a side stream (cuDNN's autotuning and the
merge strategies' index tables must not happen during capture), one per key, so a merge change
or a new input size is captured between frames, never during one. Any failure to capture is
logged once with its reason and that key runs eagerly from then on.

The output of a replay lives in the graph's static buffer: the caller must be done with it
before the next call with the same key (the Segmenter and PoseEstimator reduce it at once).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable, Hashable

import torch

log = logging.getLogger(__name__)
WARMUP_PASSES = 3


class GraphedForward:
    """forward(x) of ``model`` through cached CUDA graphs (eager on the CPU or when disabled)."""

    def __init__(self, model: torch.nn.Module, key: Callable[[], Hashable], enabled: bool = True,
                 max_graphs: int = 8) -> None:
        """key(): what besides the input shape and dtype selects a graph (the merge configuration)."""
        self.model = model
        self._key = key
        self.enabled = enabled
        self._graphs: OrderedDict[Hashable, tuple[Any, torch.Tensor, torch.Tensor] | None] = OrderedDict()
        self._max = max_graphs
        self.failures: dict[Hashable, str] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.enabled and x.is_cuda):
            return self.model(x)
        key = (tuple(x.shape), x.dtype, self._key())
        if key not in self._graphs:
            self._graphs[key] = self._capture(key, x)
            while len(self._graphs) > self._max:
                self._graphs.popitem(last=False)
        entry = self._graphs[key]
        self._graphs.move_to_end(key)
        if entry is None:
            return self.model(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    @property
    def captured(self) -> int:
        return sum(1 for entry in self._graphs.values() if entry is not None)

    def _capture(self, key: Hashable, x: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor] | None:
        try:
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_PASSES):
                    self.model(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            return graph, static_in, static_out
        except Exception as err:  # noqa: BLE001 -- any capture failure falls back to eager, once per key
            reason = f"{type(err).__name__}: {err}"
            self.failures[key] = reason
            log.warning("CUDA graph capture failed for input %s %s (%s); running that case eagerly",
                        tuple(x.shape), x.dtype, reason)
            return None
