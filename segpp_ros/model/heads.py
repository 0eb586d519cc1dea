"""Decode heads: mmseg/mmpose-style fusion head and the HF/NVlabs all-MLP head.

Both heads end in a 1x1 fusion over the channel concatenation of the four upsampled stage
maps. That fusion is linear, and so is bilinear upsampling, so fuse(cat(up(y_i))) equals
sum_i up(W_i y_i) with W_i the fusion weight's slice for stage i. We apply W_i at each stage's
own resolution and upsample the result: the same numbers (up to rounding) at a fraction of
the cost, since the stride-4 map is the most expensive thing in the whole model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import pointwise

Tensor = torch.Tensor


def bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift per channel, in eval mode."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class ConvBNReLU(nn.Module):
    """1x1 conv (no bias) + BatchNorm + ReLU: mmcv's ConvModule as used by SegformerHead."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.bn.training:
            return F.relu(self.bn(pointwise(x, self.conv.weight)), inplace=True)
        # eval: BN folded into the conv saves a full pass over the (large) output map
        scale, shift = bn_affine(self.bn)
        return F.relu(pointwise(x, self.conv.weight.flatten(1) * scale[:, None], shift), inplace=True)


def _upsample_sum(parts: list[Tensor], size: torch.Size) -> Tensor:
    """Sum of channels-last [B, C, h_i, w_i] maps after bilinear resizing (align_corners=False)
    to ``size``; parts[0] must already have that size and is accumulated into."""
    total = parts[0]
    for part in parts[1:]:
        total = total.add_(F.interpolate(part, size=size, mode="bilinear", align_corners=False))
    return total


def fuse_and_classify(maps: list[Tensor], weights: list[Tensor], bias: Tensor | None, bn: nn.BatchNorm2d,
                      dropout: nn.Module, classifier: nn.Conv2d) -> Tensor:
    """classifier(dropout(relu(bn(sum_i up(W_i m_i) + bias)))).

    maps: [B, C_i, h_i, w_i] with maps[0] at the output size; weights: [ch, C_i].
    In eval mode the BN is folded into the W_i, and the constant shift rides on the smallest
    map: bilinear weights sum to one, so it survives resizing and costs almost nothing there.
    """
    size = maps[0].shape[-2:]
    if bn.training:
        x = _upsample_sum([pointwise(m, w) for m, w in zip(maps, weights)], size)
        if bias is not None:
            x = x + bias[None, :, None, None]
        x = bn(x)
    else:
        scale, shift = bn_affine(bn)
        if bias is not None:
            shift = shift + scale * bias
        last = len(maps) - 1
        parts = [pointwise(m, w * scale[:, None], shift if i == last else None)
                 for i, (m, w) in enumerate(zip(maps, weights))]
        x = _upsample_sum(parts, size)
    x = F.relu(x, inplace=True)
    return pointwise(dropout(x), classifier.weight, classifier.bias)


class FusionHead(nn.Module):
    """mmseg SegformerHead (and the SegFormer++ pose head when dropout is 0).

    Per stage 1x1 conv+BN+ReLU to ``channels``; bilinear resize to the stride-4 map;
    concatenation in stage order 1..4; 1x1 conv+BN+ReLU fusion; dropout; 1x1 classifier.
    features: 4 x [B, C_i, h_i, w_i] -> [B, num_outputs, h_1, w_1] (channels-last).
    """

    def __init__(self, in_dims: tuple[int, ...], channels: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.channels = channels
        self.convs = nn.ModuleList(ConvBNReLU(c, channels) for c in in_dims)
        self.fuse = ConvBNReLU(channels * len(in_dims), channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        maps = [conv(f) for f, conv in zip(features, self.convs)]
        weights = list(self.fuse.conv.weight.flatten(1).split(self.channels, dim=1))
        return fuse_and_classify(maps, weights, None, self.fuse.bn, self.dropout, self.classifier)


class MLPHead(nn.Module):
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
        self.channels = channels
        self.linear_c = nn.ModuleList(nn.Linear(c, channels) for c in in_dims)
        self.fuse = nn.Conv2d(channels * len(in_dims), channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        n = len(features)
        fuse = self.fuse.weight.flatten(1).split(self.channels, dim=1)   # slice k belongs to stage n-1-k
        weights = [fuse[n - 1 - i] @ linear.weight for i, linear in enumerate(self.linear_c)]
        bias = sum(fuse[n - 1 - i] @ linear.bias for i, linear in enumerate(self.linear_c))
        return fuse_and_classify(features, weights, bias, self.bn, self.dropout, self.classifier)


HEADS: dict[str, type[nn.Module]] = {"mmseg": FusionHead, "hf": MLPHead}
