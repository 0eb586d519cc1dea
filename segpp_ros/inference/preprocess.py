"""Input normalisation shared by training and inference: one definition, so they never drift.

Images are RGB uint8 (0..255), normalised with the ImageNet mean/std every SegFormer and
SegFormer++ checkpoint was trained with.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


@functools.lru_cache(maxsize=8)
def _normalisation(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std [1, 3, 1, 1] on ``device``: made once, not uploaded with every frame."""
    return (torch.tensor(MEAN, dtype=dtype, device=device).view(1, 3, 1, 1),
            torch.tensor(STD, dtype=dtype, device=device).view(1, 3, 1, 1))


class PinnedUploads:
    """Page-locked staging buffers, one per shape, reused frame after frame: a copy from pinned
    memory to the GPU runs asynchronously (from pageable memory it waits for the copy).

    A buffer is written again only once its previous copy has finished (an event recorded after
    each copy): two same-size frames uploaded within one call (two cameras) must not overwrite
    the first while it is still crossing the bus. A frame later, that copy has long finished and
    the wait costs nothing."""

    def __init__(self, max_buffers: int = 4) -> None:
        self._buffers: dict[tuple[int, ...], tuple[torch.Tensor, torch.cuda.Event | None]] = {}
        self._max = max_buffers

    def upload(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        shape = tuple(images.shape)
        buffer, copied = self._buffers.get(shape, (None, None))
        if buffer is None:
            if len(self._buffers) >= self._max:
                self._buffers.pop(next(iter(self._buffers)))
            buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        elif copied is not None:
            copied.synchronize()
        buffer.numpy()[...] = images
        out = buffer.to(device, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()                     # on the current stream, after the copy it queued
        self._buffers[shape] = (buffer, copied)
        return out


def upload(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
           uploads: PinnedUploads | None = None) -> torch.Tensor:
    """RGB uint8 images [H, W, 3] or [B, H, W, 3] -> uint8 [B, H, W, 3] on ``device`` (through
    ``uploads``' pinned buffers for a CUDA device)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    device = torch.device(device) if device is not None else None
    if uploads is not None and device is not None and device.type == "cuda" and isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 images [H, W, 3] or [B, H, W, 3], got {images.dtype} "
                             f"{images.shape}")
        return uploads.upload(images, device)
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
    return x.to(device, non_blocking=True) if device is not None else x


def normalise(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, H, W, 3] (on any device) -> normalised [B, 3, H, W] in ``dtype``."""
    # contiguous NCHW: the patch embedding and every later layout assume it; normalised in
    # place (the same two operations, one buffer instead of three)
    x = x.permute(0, 3, 1, 2).to(dtype, memory_format=torch.contiguous_format)
    mean, std = _normalisation(x.device, dtype)
    return x.sub_(mean).div_(std)


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32, uploads: PinnedUploads | None = None) -> torch.Tensor:
    """RGB uint8 images [H, W, 3] or [B, H, W, 3] -> normalised float [B, 3, H, W].

    The uint8 batch is moved to ``device`` before the conversion: a quarter of the bytes of
    the float tensor cross the bus.
    """
    return normalise(upload(images, device, uploads), dtype)
