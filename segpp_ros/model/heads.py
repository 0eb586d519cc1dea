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


class ConvBNReLU(nn.Module):
    """1x1 conv (no bias) + BatchNorm + ReLU: mmcv's ConvModule as used by SegformerHead."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(pointwise(x, self.conv.weight)), inplace=True)


def _upsample_sum(parts: list[Tensor], size: torch.Size) -> Tensor:
    """Sum of channels-last [B, C, h_i, w_i] maps after bilinear resizing (align_corners=False)
    to ``size``; parts[0] must already have that size and is accumulated into."""
    total = parts[0]
    for part in parts[1:]:
        total = total.add_(F.interpolate(part, size=size, mode="bilinear", align_corners=False))
    return total


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
        fuse_weights = self.fuse.conv.weight.flatten(1).split(self.channels, dim=1)
        parts = [pointwise(conv(f), wk) for f, conv, wk in zip(features, self.convs, fuse_weights)]
        x = F.relu(self.fuse.bn(_upsample_sum(parts, features[0].shape[-2:])), inplace=True)
        return pointwise(self.dropout(x), self.classifier.weight, self.classifier.bias)


class MLPHead(nn.Module):
    """HF transformers / NVlabs all-MLP head.

    Per stage Linear (with bias) to ``channels``; bilinear resize; concatenation in reverse
    stage order (4..1); 1x1 conv (no bias) + BN + ReLU; dropout; 1x1 classifier.
    Everything before the BN is linear, so each stage's Linear and fusion slice collapse
    into one C_i -> channels map applied at the stage's own resolution.
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
        parts, bias = [], 0.0
        for i, (f, linear) in enumerate(zip(features, self.linear_c)):
            wf = fuse[n - 1 - i]
            parts.append(pointwise(f, wf @ linear.weight))
            # bilinear weights sum to one, so a per-channel constant survives resizing unchanged
            bias = bias + wf @ linear.bias
        x = _upsample_sum(parts, features[0].shape[-2:]) + bias[None, :, None, None]
        x = F.relu(self.bn(x), inplace=True)
        return pointwise(self.dropout(x), self.classifier.weight, self.classifier.bias)


HEADS: dict[str, type[nn.Module]] = {"mmseg": FusionHead, "hf": MLPHead}
