"""Token-merging strategies and their runtime configuration.

A strategy is one function ``(x [B, N, C], h, w, setting) -> Merge`` registered by name in
``STRATEGIES``. It computes the matching once (without gradients) and returns closures that
merge any tensor laid out like ``x`` and map merged outputs back to the original grid.
Merging is configuration of a loaded model (``SegFormerPP.set_merge``), never part of its weights.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .layout import exporting, grid_to_tokens, tokens_to_grid
from .spec import NUM_STAGES

Tensor = torch.Tensor
# index tables kept per (grid, cell, device): one forward pass needs up to 8 (4 stages, q and kv);
# a camera switching between a few sizes and presets needs a few dozen. Bounded, because a stream
# of ever-new sizes must not grow memory (a 1080p stage-1 table is about 1 MB)
INDEX_CACHE_SIZE = 32
_RETAINERS = threading.local()


@contextlib.contextmanager
def retain_tables() -> Iterator[list[Tensor]]:
    """Collect every cached index table that merges on this thread use meanwhile. A CUDA graph
    captured meanwhile reads them by device address: it keeps the list, so a later eviction
    from the bounded cache never frees memory a live graph reads (inference.graphs)."""
    stack = _RETAINERS.__dict__.setdefault("stack", [])
    tables: list[Tensor] = []
    stack.append(tables)
    try:
        yield tables
    finally:
        stack.pop()


def _retained(*tables: Tensor) -> None:
    for held in getattr(_RETAINERS, "stack", ()):
        held.extend(tables)


@dataclass(frozen=True)
class TokenMerge:
    """How one token set (queries or keys/values) of a stage is merged.

    mode:  'none', 'bsm' (2-D bipartite soft matching) or 'n2d' (neighbour averaging).
    ratio: bsm only; fraction of all tokens removed, r = int(N * ratio), capped at #sources.
    cell:  (sy, sx) grid cell; bsm takes one destination per cell, n2d averages each cell.
    """

    mode: str = "none"
    ratio: float = 0.0
    cell: tuple[int, int] = (2, 2)

    def __post_init__(self) -> None:
        if self.mode not in STRATEGIES:
            raise ValueError(f"merge mode {self.mode!r} is unknown; use one of {', '.join(STRATEGIES)}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"merge ratio {self.ratio!r} must be in [0, 1)")
        cell = tuple(int(c) for c in self.cell)
        if len(cell) != 2 or min(cell) < 1:
            raise ValueError(f"merge cell {self.cell!r} must be two positive integers (sy, sx)")
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "ratio", float(self.ratio))

    @property
    def active(self) -> bool:
        if self.mode == "none":
            return False
        if self.mode == "bsm":
            return self.ratio > 0.0
        return self.cell != (1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "ratio": self.ratio, "cell": list(self.cell)}


@dataclass(frozen=True)
class StageMerge:
    """Merging of one encoder stage: queries (unmerged after attention) and keys/values."""

    q: TokenMerge = field(default_factory=TokenMerge)
    kv: TokenMerge = field(default_factory=TokenMerge)

    def to_dict(self) -> dict[str, Any]:
        return {"q": self.q.to_dict(), "kv": self.kv.to_dict()}


@dataclass(frozen=True)
class MergeConfig:
    """The whole-model merging configuration.

    name:       preset name, or 'custom' for a hand-made configuration.
    stages:     one StageMerge per encoder stage.
    downsample: integer input subsampling factor (the 'downsample' baseline uses 2); the
                logits are upsampled back so the output size never depends on it.
    """

    name: str
    stages: tuple[StageMerge, StageMerge, StageMerge, StageMerge]
    downsample: int = 1

    def __post_init__(self) -> None:
        if len(self.stages) != NUM_STAGES:
            raise ValueError(f"a merge configuration needs {NUM_STAGES} stages, got {len(self.stages)}")
        if int(self.downsample) < 1:
            raise ValueError(f"downsample factor must be >= 1, got {self.downsample!r}")
        object.__setattr__(self, "stages", tuple(self.stages))

    @property
    def is_noop(self) -> bool:
        return self.downsample == 1 and not any(s.q.active or s.kv.active for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "downsample": self.downsample,
                "stages": [s.to_dict() for s in self.stages]}


@dataclass(frozen=True)
class Merge:
    """A computed matching: ``merge`` [B, N, C] -> [B, M, C], ``unmerge`` [B, M, C] -> [B, N, C]."""

    merge: Callable[[Tensor], Tensor]
    unmerge: Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


NO_MERGE = Merge(_identity, _identity)

Strategy = Callable[[Tensor, int, int, TokenMerge], Merge]
STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def wrap(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn
    return wrap


@register("none")
def no_merge(x: Tensor, h: int, w: int, setting: TokenMerge) -> Merge:
    return NO_MERGE


@functools.lru_cache(maxsize=INDEX_CACHE_SIZE)
def _bipartite_partition(h: int, w: int, sy: int, sx: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Flat indices (row-major) of sources and destinations of an h x w grid, and where each
    token stands in the sources-then-destinations order (the inverse permutation: per-token
    values computed for sources and destinations come back in token order with one gather).

    The top-left token of every full sy x sx cell is a destination; every other token,
    including the ragged rows/columns at the bottom/right border, is a source.
    """
    with torch.inference_mode(False):     # cached: must stay usable by code that records gradients
        return _build_partition(h, w, sy, sx, device)


def _build_partition(h: int, w: int, sy: int, sx: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    # built on the host and uploaded once (cached): constants of any graph traced or captured
    # later, never ops in it
    is_dst = np.zeros((h, w), dtype=bool)
    is_dst[0:(h // sy) * sy:sy, 0:(w // sx) * sx:sx] = True
    order = np.concatenate([np.flatnonzero(~is_dst.ravel()), np.flatnonzero(is_dst.ravel())])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(h * w)
    n_src = h * w - int(is_dst.sum())
    order_t, inverse_t = (torch.from_numpy(a).to(device) for a in (order, inverse))
    return order_t[:n_src], order_t[n_src:], inverse_t


def _flat_slots(slot: Tensor, num_slots: int) -> Tensor:
    """[B, N] slots per batch entry -> [B * N] rows of the flattened [B * num_slots, C] merged
    tokens: merging and unmerging then move whole rows (one index per token, not one per value),
    which graph compilers (OpenVINO, ONNX runtimes) run as plain gathers and scatter-adds."""
    B = slot.shape[0]
    return (slot + torch.arange(B, device=slot.device).unsqueeze(1) * num_slots).reshape(-1)


def _grouped_mean(slot: Tensor, num_slots: int) -> Callable[[Tensor], Tensor]:
    """Merge function averaging the tokens that share a slot; ``slot`` is [B, N].

    Sums and counts accumulate in float32 whatever the model's precision: a 16-bit running sum
    stalls once it is large against one token (in bfloat16 a group of 400 tokens of 1.3 averaged
    to 2.0), and CUDA's atomic adds would accumulate in 16 bits, differently on every run.
    """
    B, N = slot.shape
    rows = _flat_slots(slot, num_slots)
    acc = torch.float32

    def merge(x: Tensor) -> Tensor:
        C = x.shape[-1]
        dtype = acc if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        total = torch.zeros(B * num_slots, C, dtype=dtype, device=x.device).index_add_(
            0, rows, x.reshape(B * N, C).to(dtype))
        count = torch.zeros(B * num_slots, 1, dtype=dtype, device=x.device).index_add_(
            0, rows, torch.ones(B * N, 1, dtype=dtype, device=x.device))
        return (total / count).to(x.dtype).view(B, num_slots, C)

    return merge


def _gather_slots(slot: Tensor, num_slots: int) -> Callable[[Tensor], Tensor]:
    """Unmerge function giving every original token its slot's value; ``slot`` is [B, N]."""
    B, N = slot.shape
    rows = _flat_slots(slot, num_slots)

    def unmerge(y: Tensor) -> Tensor:
        return y.reshape(B * num_slots, y.shape[-1]).index_select(0, rows).view(B, N, y.shape[-1])

    return unmerge


def _top_mask(values: Tensor, r: int, length: int) -> Tensor:
    """[B, S] (S == ``length``, a plain int also while tracing) -> bool [B, S], True at the
    ``r`` largest values of each row, ties by index (the lower index first, as a stable sort
    orders them).

    A graph being exported (OpenVINO's conversion, ONNX) has no stable sort: there it is one
    TopK of the shorter side, the r largest or the S - r smallest (a sort of the whole length is
    what made merging slower than no merging in a compiled graph), whose choice among values
    exactly equal at the r-th place is the runtime's."""
    none = torch.zeros(values.shape[0], length, dtype=torch.bool, device=values.device)
    if exporting():
        top = r <= length - r
        picked = torch.topk(values, r if top else length - r, dim=-1, largest=top, sorted=False).indices
        mask = none.scatter(1, picked, torch.ones(picked.shape, dtype=torch.bool, device=values.device))
        return mask if top else ~mask
    order = values.argsort(dim=-1, descending=True, stable=True)
    return none.scatter(1, order[:, :r], torch.ones_like(order[:, :r], dtype=torch.bool))


@register("bsm")
def bipartite_soft_matching_2d(x: Tensor, h: int, w: int, setting: TokenMerge) -> Merge:
    """2-D bipartite soft matching (tomesd's random2d without randomness).

    Every source's most cosine-similar destination is found; the r most similar sources are
    averaged into their destination (the destination itself counted once). Merged tokens are
    the unmerged sources in token order, then the destinations (tomesd orders the unmerged
    sources by similarity; attention does not depend on the order of its tokens). Every step
    has a fixed size per grid and ratio: a gather of the sources and destinations, one matmul,
    a max, the r most similar (``_top_mask``), a prefix sum for the unmerged sources' places.
    x: [B, N, C] with N == h * w, row-major.
    """
    B = x.shape[0]
    sy, sx = setting.cell
    src_idx, dst_idx, inverse = partition = _bipartite_partition(h, w, sy, sx, x.device)
    _retained(*partition)
    # plain ints from the grid, also while a graph is traced: its shapes are fixed per grid
    N, n_src, n_dst = h * w, int(src_idx.shape[0]), int(dst_idx.shape[0])
    r = min(int(N * setting.ratio), n_src)
    if r <= 0 or n_dst == 0:
        return NO_MERGE
    with torch.no_grad():
        # float32 whatever the model's precision: 16-bit cosine scores tie massively (2 distinct
        # best scores among 100 sources in float16), and the merge would then depend on the sort;
        # the epsilon keeps an all-zero token from dividing by zero (NaN); the stable sort breaks
        # the remaining ties by token index, the same on every device
        metric = F.normalize(x.float(), dim=-1, eps=1e-6)
        scores = metric.index_select(1, src_idx) @ metric.index_select(1, dst_idx).transpose(1, 2)   # [B, S, D]
        best, best_dst = scores.max(dim=-1)                                 # [B, S]
        merged = _top_mask(best, r, n_src)                                       # [B, S]
        n_kept = n_src - r
        # slot[b, n]: which merged token original token n belongs to: an unmerged source its
        # place among the unmerged ones, a merged source its destination's, a destination its own
        kept_place = torch.cumsum((~merged).to(torch.int64), dim=1) - 1
        src_slot = torch.where(merged, n_kept + best_dst, kept_place)
        dst_slot = (n_kept + torch.arange(n_dst, device=x.device)).expand(B, n_dst)
        slot = torch.cat([src_slot, dst_slot], dim=1).index_select(1, inverse)
    return Merge(_grouped_mean(slot, n_kept + n_dst), _gather_slots(slot, n_kept + n_dst))


@functools.lru_cache(maxsize=INDEX_CACHE_SIZE)
def _cell_slots(h: int, w: int, sy: int, sx: int, device: torch.device) -> Tensor:
    """[h * w] index of the sy x sx cell (row-major over the ceil-sized cell grid) of each token."""
    with torch.inference_mode(False):     # cached: must stay usable by code that records gradients
        rows = torch.arange(h, device=device) // sy
        cols = torch.arange(w, device=device) // sx
        return (rows[:, None] * math.ceil(w / sx) + cols[None, :]).flatten()


@register("n2d")
def neighbour_merge_2d(x: Tensor, h: int, w: int, setting: TokenMerge) -> Merge:
    """Average each sy x sx cell (ceil mode: partial border cells average what they hold);
    unmerge copies each cell's output back to all of its positions (nearest upsampling).
    x: [B, N, C] with N == h * w, row-major.
    """
    sy, sx = setting.cell

    def merge(t: Tensor) -> Tensor:
        # pooling the channels-last view is >10x faster than pooling a strided NCHW one
        return grid_to_tokens(F.avg_pool2d(tokens_to_grid(t, h, w), (sy, sx), (sy, sx), ceil_mode=True))

    slots = _cell_slots(h, w, sy, sx, x.device)
    _retained(slots)

    def unmerge(y: Tensor) -> Tensor:
        return y.index_select(1, slots)

    return Merge(merge, unmerge)


def compute_merge(x: Tensor, h: int, w: int, setting: TokenMerge) -> Merge:
    """Run the registered strategy of ``setting`` on tokens x [B, N, C] of an h x w grid."""
    if not setting.active:
        return NO_MERGE
    return STRATEGIES[setting.mode](x, h, w, setting)


def _uniform(early: StageMerge, late: StageMerge) -> tuple[StageMerge, ...]:
    return (early, early, late, late)


_NONE = StageMerge()
PRESETS: dict[str, MergeConfig] = {
    "none": MergeConfig("none", _uniform(_NONE, _NONE)),
    "hq": MergeConfig("hq", _uniform(
        StageMerge(kv=TokenMerge("bsm", 0.6, (2, 2))),
        StageMerge(q=TokenMerge("bsm", 0.8, (4, 4))))),
    "fast": MergeConfig("fast", _uniform(
        StageMerge(kv=TokenMerge("bsm", 0.9, (4, 4))),
        StageMerge(q=TokenMerge("bsm", 0.9, (4, 4))))),
    "2x2": MergeConfig("2x2", _uniform(
        StageMerge(q=TokenMerge("n2d", 0.0, (2, 2))),
        StageMerge(q=TokenMerge("n2d", 0.0, (2, 2))))),
    "downsample": MergeConfig("downsample", _uniform(_NONE, _NONE), downsample=2),
}


TOKEN_FIELDS: tuple[str, ...] = ("mode", "ratio", "cell")
CONFIG_FIELDS: tuple[str, ...] = ("name", "preset", "stages", "downsample")


def _token_merge(value: Any, where: str) -> TokenMerge:
    """A TokenMerge from its dict form; errors name the field (``where``: e.g. 'stages[0].kv')."""
    if isinstance(value, TokenMerge):
        return value
    if value is None:
        return TokenMerge()
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping with mode/ratio/cell, got {value!r}")
    unknown = sorted(set(value) - set(TOKEN_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {', '.join(TOKEN_FIELDS)}")
    mode, ratio, cell = value.get("mode", "none"), value.get("ratio", 0.0), value.get("cell", (2, 2))
    if mode not in STRATEGIES:
        raise ValueError(f"{where}.mode {mode!r} is unknown; use one of {', '.join(STRATEGIES)}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"{where}.ratio must be a number in [0, 1), got {ratio!r}")
    if (isinstance(cell, (str, bytes)) or not isinstance(cell, (list, tuple)) or len(cell) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in cell)):
        raise ValueError(f"{where}.cell must be two positive integers [sy, sx], got {cell!r}")
    return TokenMerge(str(mode), float(ratio), tuple(cell))


def _stage_merge(value: Any, where: str) -> StageMerge:
    if isinstance(value, StageMerge):
        return value
    if value is None:
        return StageMerge()
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping with q and/or kv, got {value!r}")
    unknown = sorted(set(value) - {"q", "kv"})
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: q, kv")
    return StageMerge(_token_merge(value.get("q"), f"{where}.q"), _token_merge(value.get("kv"), f"{where}.kv"))


def resolve_merge(config: str | MergeConfig | Mapping[str, Any]) -> MergeConfig:
    """Turn a preset name, a MergeConfig or its dict form (``MergeConfig.to_dict``) into a MergeConfig.

    The dict form: ``stages`` (four entries, each ``{q: {mode, ratio, cell}, kv: {...}}``, a
    missing token set or field meaning no merging), ``downsample`` (an integer >= 1), ``preset``
    (a preset whose values the others override) and ``name``. Unknown keys and bad values raise
    ValueError naming the field, e.g. ``stages[2].q.ratio``."""
    if isinstance(config, MergeConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown merge preset {config!r}; use one of {', '.join(PRESETS)} "
                             "or a per-stage configuration")
        return PRESETS[config]
    if not isinstance(config, Mapping):
        raise ValueError(f"merge configuration must be a preset name, MergeConfig or mapping, got {config!r}")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"merge configuration has unknown keys {unknown}; allowed: {', '.join(CONFIG_FIELDS)}")
    if "preset" in config and config["preset"] not in PRESETS:
        raise ValueError(f"preset {config['preset']!r} is unknown; use one of {', '.join(PRESETS)}")
    base = PRESETS[config["preset"]] if "preset" in config else PRESETS["none"]
    stages = config.get("stages")
    if stages is None:
        stages = base.stages
    else:
        if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, (list, tuple)) \
                or len(stages) != NUM_STAGES:
            raise ValueError(f"stages must be a list of {NUM_STAGES} entries (one per encoder stage), got {stages!r}")
        stages = tuple(_stage_merge(s, f"stages[{i}]") for i, s in enumerate(stages))
    downsample = config.get("downsample", base.downsample)
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ValueError(f"downsample must be an integer >= 1, got {downsample!r}")
    name = str(config.get("name", base.name if "stages" not in config else "custom"))
    return replace(base, name=name, stages=stages, downsample=downsample)
