"""Token <-> grid views.

Tokens travel as [B, N, C] (row-major over an h x w grid). Convolutions and resizing see
them through a channels-last [B, C, h, w] view of the same memory: no copies either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def tokens_to_grid(x: Tensor, h: int, w: int) -> Tensor:
    """[B, N, C] -> channels-last [B, C, h, w] view (no copy for contiguous tokens).

    Built with permute rather than transpose+view so that the batch stride is N*C even for
    B == 1: resize kernels pick their (much faster) channels-last path from the strides.
    """
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def grid_to_tokens(x: Tensor) -> Tensor:
    """[B, C, h, w] -> [B, h * w, C]; a view when x is channels-last."""
    return x.flatten(2).transpose(1, 2)


def pointwise(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """1x1 convolution of a [B, C, h, w] map as a matmul over its tokens -> channels-last [B, K, h, w].

    weight: [K, C] or [K, C, 1, 1].
    """
    h, w = x.shape[-2:]
    return tokens_to_grid(F.linear(grid_to_tokens(x), weight.flatten(1), bias), h, w)
