"""The forward pass through torch.compile's inductor (backend 'inductor'): Triton kernels and, on
CUDA, inductor's own CUDA graphs (mode 'reduce-overhead').

One compiled function per merge configuration: each is its own ``torch.compile`` of a small
module that holds the model and the configuration, so switching presets (or the latency
budget's steps) selects a function already compiled instead of tripping the guards of one
function and recompiling it. Input shapes are static (``dynamic=False``): a new camera size
compiles anew for that configuration, on its first call (the node's warm-up compiles the
warm-up size at configure; the frame pipeline warms a new size up before its first frame on
CUDA). Bounded: ``max_functions`` configurations, least recently used dropped.

Compiling takes seconds to a minute per (configuration, size) on a GPU; it is measured beside
eager and CUDA graphs by tools/gpu-check. On the CPU 'openvino' is the compiled backend (see
docs/benchmarks.md); 'inductor' also runs there (C++ kernels), for tests and comparisons.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

import torch

from ..model.merge import MergeConfig

RECOMPILES_PER_FUNCTION = 16    # input sizes one configuration's function may be compiled for


class _Configured(torch.nn.Module):
    """The model with one merge configuration set for its call (its own compiled code)."""

    def __init__(self, model: torch.nn.Module, merge: MergeConfig) -> None:
        super().__init__()
        self.model = model
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class InductorForward:
    """forward(x) of ``model`` through one torch.compile'd function per merge configuration."""

    def __init__(self, model: torch.nn.Module, key: Callable[[], Hashable], mode: str | None = None,
                 compile_backend: str = "inductor", max_functions: int = 8) -> None:
        """key(): the merge configuration in force. ``mode``: torch.compile's (default:
        'reduce-overhead' on CUDA, inductor's default on the CPU). ``compile_backend``: inductor,
        or a lighter dynamo backend ('eager', 'aot_eager') for tests of the tracing alone."""
        import torch._dynamo

        # one code object (the model's forward) serves every configuration and size
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit,
                                                    RECOMPILES_PER_FUNCTION * max_functions)
        self.model = model
        self._key = key
        self.mode = mode
        self.compile_backend = compile_backend
        self._functions: OrderedDict[Hashable, Callable[[torch.Tensor], torch.Tensor]] = OrderedDict()
        self._max = max_functions
        self._lock = threading.Lock()
        self.compiled: set[tuple[Hashable, tuple[int, ...], torch.dtype]] = set()   # what ran compiled

    def _function(self, merge: Hashable, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        with self._lock:
            fn = self._functions.get(merge)
            if fn is None:
                mode = self.mode or ("reduce-overhead" if device.type == "cuda" else None)
                fn = torch.compile(_Configured(self.model, merge), backend=self.compile_backend, mode=mode,
                                   dynamic=False, fullgraph=False)
                self._functions[merge] = fn
                while len(self._functions) > self._max:
                    self._functions.popitem(last=False)
            self._functions.move_to_end(merge)
            return fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        merge = self._key()
        out = self._function(merge, x.device)(x)
        self.compiled.add((merge, tuple(x.shape), x.dtype))
        if x.is_cuda and self.mode in (None, "reduce-overhead", "max-autotune"):
            # inductor's CUDA graphs reuse their output buffers on the next replay: the caller
            # reduces it at once, but a clone keeps a second model's call from overwriting it
            out = out.clone()
        return out
