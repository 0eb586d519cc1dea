"""Decode heads: mmseg/mmpose-style fusion head and the HF/NVlabs all-MLP head.

Both heads end in a 1x1 fusion over the channel concatenation of the four upsampled stage
maps. That fusion is linear, and so is bilinear upsampling, so fuse(cat(up(y_i))) equals
sum_i up(W_i y_i) with W_i the fusion weight's slice for stage i. We apply W_i at each stage's
own resolution and upsample the result: the same numbers (up to rounding) at a fraction of
the cost, since the stride-4 map is the most expensive thing in the whole model.

Inference folds the eval-mode BatchNorms into those weights once (``fold``), in float32 before
the model is cast to its inference precision: recomputing them every forward in float16 cost a
pass over the weights per frame, and the BN epsilon (1e-5) lies below float16's normal range.
Folded tensors are non-persistent buffers: never saved, moved and cast with the model, dropped by
``unfold`` (SegFormerPP does that when it returns to training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .folding import Foldable
from .layout import pointwise

Tensor = torch.Tensor


def bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift per channel, in eval mode."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class ConvBNReLU(Foldable):
    """1x1 conv (no bias) + BatchNorm + ReLU: mmcv's ConvModule as used by SegformerHead."""

    FOLDED = ("folded_weight", "folded_bias")

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def folded(self) -> tuple[Tensor, Tensor]:
        # eval: BN folded into the conv saves a full pass over the (large) output map
        scale, shift = bn_affine(self.bn)
        return self.conv.weight.flatten(1) * scale[:, None], shift

    def forward(self, x: Tensor) -> Tensor:
        if self.bn.training:
            return F.relu(self.bn(pointwise(x, self.conv.weight)), inplace=True)
        weight, bias = (self.folded_weight, self.folded_bias) if self.is_folded else self.folded()
        return F.relu(pointwise(x, weight, bias), inplace=True)


def _upsample_sum(parts: list[Tensor], size: torch.Size) -> Tensor:
    """Sum of channels-last [B, C, h_i, w_i] maps after bilinear resizing (align_corners=False)
    to ``size``; parts[0] must already have that size and is accumulated into."""
    total = parts[0]
    for part in parts[1:]:
        total = total.add_(F.interpolate(part, size=size, mode="bilinear", align_corners=False))
    return total


def fold_fusion(weights: list[Tensor], bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, ...]:
    """The eval-mode fusion: (W_0 * s, ..., W_n * s, shift) with bn(sum W_i m_i + bias) ==
    sum (W_i * s) m_i + shift per channel."""
    scale, shift = bn_affine(bn)
    if bias is not None:
        shift = shift + scale * bias
    return (*(w * scale[:, None] for w in weights), shift)


def fuse_and_classify(maps: list[Tensor], weights: list[Tensor], bias: Tensor | None, bn: nn.BatchNorm2d,
                      dropout: nn.Module, classifier: nn.Conv2d, folded: tuple[Tensor, ...] | None = None) -> Tensor:
    """classifier(dropout(relu(bn(sum_i up(W_i m_i) + bias)))).

    maps: [B, C_i, h_i, w_i] with maps[0] at the output size; weights: [ch, C_i].
    In eval mode the BN is folded into the W_i (``folded``: fold_fusion's result, computed here
    when not given), and the constant shift rides on the smallest map: bilinear weights sum to
    one, so it survives resizing and costs almost nothing there.
    """
    size = maps[0].shape[-2:]
    if bn.training:
        x = _upsample_sum([pointwise(m, w) for m, w in zip(maps, weights)], size)
        if bias is not None:
            x = x + bias[None, :, None, None]
        x = bn(x)
    else:
        *scaled, shift = folded if folded is not None else fold_fusion(weights, bias, bn)
        last = len(maps) - 1
        parts = [pointwise(m, w, shift if i == last else None) for i, (m, w) in enumerate(zip(maps, scaled))]
        x = _upsample_sum(parts, size)
    x = F.relu(x, inplace=True)
    return pointwise(dropout(x), classifier.weight, classifier.bias)


class FusionHead(Foldable):
    """mmseg SegformerHead (and the SegFormer++ pose head when dropout is 0).

    Per stage 1x1 conv+BN+ReLU to ``channels``; bilinear resize to the stride-4 map;
    concatenation in stage order 1..4; 1x1 conv+BN+ReLU fusion; dropout; 1x1 classifier.
    features: 4 x [B, C_i, h_i, w_i] -> [B, num_outputs, h_1, w_1] (channels-last).
    """

    def __init__(self, in_dims: tuple[int, ...], channels: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.FOLDED = (*(f"folded_fuse{i}" for i in range(len(in_dims))), "folded_shift")
        self.channels = channels
        self.convs = nn.ModuleList(ConvBNReLU(c, channels) for c in in_dims)
        self.fuse = ConvBNReLU(channels * len(in_dims), channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def _weights(self) -> list[Tensor]:
        return list(self.fuse.conv.weight.flatten(1).split(self.channels, dim=1))

    def folded(self) -> tuple[Tensor, ...]:
        return fold_fusion(self._weights(), None, self.fuse.bn)

    def forward(self, features: list[Tensor]) -> Tensor:
        maps = [conv(f) for f, conv in zip(features, self.convs)]
        folded = tuple(getattr(self, name) for name in self.FOLDED) if self.is_folded else None
        return fuse_and_classify(maps, self._weights(), None, self.fuse.bn, self.dropout, self.classifier, folded)


class MLPHead(Foldable):
    """HF transformers / NVlabs all-MLP head.

    Per stage Linear (with bias) to ``channels``; bilinear resize; concatenation in reverse
    stage order (4..1); 1x1 conv (no bias) + BN + ReLU; dropout; 1x1 classifier.
    Everything before the BN is linear, so each stage's Linear and fusion slice collapse
    into one C_i -> channels map applied at the stage's own resolution; the Linear biases
    become one per-channel constant (bilinear weights sum to one, so resizing keeps it).
    features: 4 x [B, C_i, h_i, w_i] -> [B, num_outputs, h_1, w_1] (channels-last).
    """

    def __init__(self, in_dims: tuple[int, ...], channels: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.FOLDED = (*(f"folded_fuse{i}" for i in range(len(in_dims))), "folded_shift")
        self.channels = channels
        self.linear_c = nn.ModuleList(nn.Linear(c, channels) for c in in_dims)
        self.fuse = nn.Conv2d(channels * len(in_dims), channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def _weights(self) -> tuple[list[Tensor], Tensor]:
        n = len(self.linear_c)
        fuse = self.fuse.weight.flatten(1).split(self.channels, dim=1)   # slice k belongs to stage n-1-k
        weights = [fuse[n - 1 - i] @ linear.weight for i, linear in enumerate(self.linear_c)]
        bias = sum(fuse[n - 1 - i] @ linear.bias for i, linear in enumerate(self.linear_c))
        return weights, bias

    def folded(self) -> tuple[Tensor, ...]:
        return fold_fusion(*self._weights(), self.bn)

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.is_folded:
            folded = tuple(getattr(self, name) for name in self.FOLDED)
            return fuse_and_classify(features, [], None, self.bn, self.dropout, self.classifier, folded)
        weights, bias = self._weights()
        return fuse_and_classify(features, weights, bias, self.bn, self.dropout, self.classifier)


HEADS: dict[str, type[nn.Module]] = {"mmseg": FusionHead, "hf": MLPHead}
