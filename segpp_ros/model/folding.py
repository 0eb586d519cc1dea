"""Tensors derived from the weights once for inference (folded BatchNorms, reshaped weights).

Computed by ``fold`` from the current weights, in float32 before the model is cast to its
inference precision (SegFormerPP.fold_for_inference); stored as non-persistent buffers, so they
are never saved, move and cast with the model, and are dropped by ``unfold`` when the model
trains again.
"""
from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


class Foldable(nn.Module):
    """A module with derived inference tensors: ``folded()`` computes them, ``fold`` stores them
    as non-persistent buffers (named in FOLDED), ``unfold`` drops them."""

    FOLDED: tuple[str, ...] = ()

    def folded(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @torch.no_grad()
    def fold(self) -> None:
        if not self.FOLDED:
            return
        for name, value in zip(self.FOLDED, self.folded()):
            self.register_buffer(name, value.detach().clone(), persistent=False)

    def unfold(self) -> None:
        for name in self.FOLDED:
            self._buffers.pop(name, None)

    @property
    def is_folded(self) -> bool:
        return bool(self.FOLDED) and self.FOLDED[0] in self._buffers
