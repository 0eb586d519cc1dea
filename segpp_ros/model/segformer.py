"""SegFormerPP: MiT encoder + decode head, with token merging as runtime configuration."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import MiTEncoder
from .folding import Foldable
from .heads import HEADS
from .merge import PRESETS, MergeConfig, resolve_merge
from .spec import EPS_FAMILIES, MiTSpec, NormEps, get_spec, hf_head_channels

Tensor = torch.Tensor
TASKS = ("seg", "pose")


class SegFormerPP(nn.Module):
    """SegFormer / SegFormer++ for segmentation (class logits) or pose (keypoint heatmaps).

    forward: x [B, 3, H, W] normalised float -> [B, num_outputs, ceil(H/4), ceil(W/4)] for
    every merge configuration. Metadata (class names, palette, keypoint names, skeleton,
    flip pairs) travels in ``meta`` when the checkpoint provides it.
    """

    def __init__(self, spec: MiTSpec, task: str = "seg", num_outputs: int = 19, head: str = "mmseg",
                 head_channels: int | None = None, eps: NormEps = EPS_FAMILIES["segpp"],
                 meta: Mapping[str, Any] | None = None, drop_path_rate: float = 0.0,
                 dropout: float | None = None) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)}, got {head!r}")
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.spec, self.task, self.num_outputs, self.head_type, self.eps = spec, task, num_outputs, head, eps
        if head_channels is None:
            head_channels = 256 if head == "mmseg" else hf_head_channels(spec)
        self.head_channels = head_channels
        if dropout is None:
            dropout = 0.1 if task == "seg" else 0.0
        self.encoder = MiTEncoder(spec, eps, drop_path_rate)
        self.head = HEADS[head](spec.widths, head_channels, num_outputs, dropout)
        self.meta: dict[str, Any] = dict(meta or {})
        self._merge = PRESETS["none"]

    # --- metadata -----------------------------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def palette(self) -> list[list[int]] | None:
        return self.meta.get("palette")

    @property
    def keypoints(self) -> list[str] | None:
        return self.meta.get("keypoints")

    @property
    def skeleton(self) -> list[list[int]] | None:
        return self.meta.get("skeleton")

    @property
    def flip_pairs(self) -> list[list[int]] | None:
        return self.meta.get("flip_pairs")

    def describe(self) -> dict[str, Any]:
        """JSON-able description from which ``from_description`` rebuilds the same model."""
        return {
            "spec": self.spec.to_dict(), "task": self.task, "num_outputs": self.num_outputs,
            "head": self.head_type, "head_channels": self.head_channels,
            "eps": {"block": self.eps.block, "embed": self.eps.embed}, "meta": self.meta,
        }

    @classmethod
    def from_description(cls, d: Mapping[str, Any]) -> "SegFormerPP":
        return cls(MiTSpec.from_dict(d["spec"]), d["task"], int(d["num_outputs"]), d["head"],
                   int(d["head_channels"]), NormEps(float(d["eps"]["block"]), float(d["eps"]["embed"])),
                   d.get("meta") or {})

    # --- merging ------------------------------------------------------------------------
    @property
    def merge(self) -> MergeConfig:
        """The active merge configuration."""
        return self._merge

    def set_merge(self, config: str | MergeConfig | Mapping[str, Any]) -> MergeConfig:
        """Switch merging (preset name, MergeConfig or its dict form); weights are untouched."""
        resolved = resolve_merge(config)
        self.encoder.set_merge(resolved.stages)
        self._merge = resolved
        return resolved

    def token_counts(self) -> list[tuple[int, int]]:
        """(queries, keys) seen by the first block of each stage in the last forward."""
        return [stage.blocks[0].attn.last_token_counts for stage in self.encoder.stages]

    # --- inference preparation -----------------------------------------------------------
    def fold_for_inference(self) -> SegFormerPP:
        """Compute the derived inference tensors (folded BatchNorms, reshaped weights) once from
        the current weights. Call it in float32, before casting to the inference precision; the
        model goes back to computing them per forward when it trains (``train()``) or loads
        new weights."""
        for module in self.modules():
            if isinstance(module, Foldable):
                module.fold()
        return self

    def unfold(self) -> None:
        for module in self.modules():
            if isinstance(module, Foldable):
                module.unfold()

    def train(self, mode: bool = True) -> SegFormerPP:
        if mode:
            self.unfold()  # training changes the weights the folded tensors came from
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        self.unfold()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- forward ------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        out_size = (math.ceil(H / 4), math.ceil(W / 4))
        step = self._merge.downsample
        if step > 1:
            x = x[..., ::step, ::step]           # nearest-neighbour subsampling
        logits = self.head(self.encoder(x))
        if logits.shape[-2:] != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


def build_model(variant: str | MiTSpec = "b0", task: str = "seg", num_classes: int | None = None,
                head: str = "mmseg", *, num_keypoints: int | None = None, head_channels: int | None = None,
                eps: str | NormEps | None = None, meta: Mapping[str, Any] | None = None,
                drop_path_rate: float = 0.0, merge: str | MergeConfig | Mapping[str, Any] = "none",
                ) -> SegFormerPP:
    """A randomly initialised SegFormerPP.

    num_classes (seg) / num_keypoints (pose) default to 19 / 17. eps defaults to the family of
    ``head`` ('segpp' for mmseg heads, 'hf' for HF heads); pass a family name or NormEps.
    """
    spec = get_spec(variant)
    if task == "pose":
        outputs = num_keypoints if num_keypoints is not None else (num_classes or 17)
    else:
        outputs = num_classes if num_classes is not None else 19
    if eps is None:
        eps = "hf" if head == "hf" else "segpp"
    if isinstance(eps, str):
        if eps not in EPS_FAMILIES:
            raise ValueError(f"unknown eps family {eps!r}; use one of {', '.join(EPS_FAMILIES)}")
        eps = EPS_FAMILIES[eps]
    model = SegFormerPP(spec, task, outputs, head, head_channels, eps, meta, drop_path_rate)
    model.set_merge(merge)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

