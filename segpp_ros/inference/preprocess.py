"""Input normalisation shared by training and inference: one definition, so they never drift.

Images are RGB uint8 (0..255), normalised with the ImageNet mean/std every SegFormer and
SegFormer++ checkpoint was trained with.
"""
from __future__ import annotations

import numpy as np
import torch

MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RGB uint8 images [H, W, 3] or [B, H, W, 3] -> normalised float [B, 3, H, W].

    The uint8 batch is moved to ``device`` before the conversion: a quarter of the bytes of
    the float tensor cross the bus.
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        # read-only views (mono images broadcast to RGB, buffers of received messages):
        # torch cannot wrap them, so materialise once
        images = np.array(images)
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images [H, W, 3] or [B, H, W, 3], got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (0..255), got {x.dtype}")
    if device is not None:
        x = x.to(device, non_blocking=True)
    # contiguous NCHW: the patch embedding and every later layout assume it; normalised in
    # place (the same two operations, one buffer instead of three)
    x = x.permute(0, 3, 1, 2).to(dtype, memory_format=torch.contiguous_format)
    mean = torch.tensor(MEAN, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)
