"""Segmentation: numpy RGB images in, class-ID label images out (torch, no ROS).

The ROS node is a thin adapter over Segmenter; everything here is testable without ROS.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..model import MergeConfig, SegFormerPP
from .labels import upsampled_argmax
from .loader import load_for_inference
from .preprocess import to_tensor
from .timing import timed


def network_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """Input size for the network: the image's own, or scaled so its longer side is max_side."""
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(32, round(h * scale)), max(32, round(w * scale))


@dataclass
class Segmentation:
    """One image's result: labels [H, W] (uint8, uint16 above 255 classes) and timings in ms."""

    labels: np.ndarray
    network_ms: float
    total_ms: float


class Segmenter:
    """A loaded segmentation model with its pre- and post-processing.

    labels come back at input resolution (logits resized bilinearly before the argmax, so
    boundaries are exact to the pixel) or at network resolution (``output="network"``).
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "fp32",
                 merge: str | MergeConfig | Mapping[str, Any] = "none", max_side: int | None = None) -> None:
        self.model: SegFormerPP
        self.model, self.device, self.dtype, self.weights = load_for_inference(weights, "seg", device, precision)
        self.max_side = max_side
        self.model.set_merge(merge)
        n = self.model.num_outputs
        self.classes = list(self.model.classes or [f"class_{i}" for i in range(n)])
        self.palette = np.array(self.model.palette or default_palette(n), dtype=np.uint8)

    def describe(self) -> str:
        """One line for logs: variant, head, classes, precision."""
        m = self.model
        return (f"SegFormer++ MiT-{m.spec.name.upper()} ({m.head_type} head, {m.num_outputs} classes, "
                f"{str(self.dtype).removeprefix('torch.')})")

    @property
    def label_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.model.num_outputs <= 256 else np.uint16)

    def set_merge(self, merge: str | MergeConfig | Mapping[str, Any]) -> MergeConfig:
        return self.model.set_merge(merge)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, output: str = "input") -> Segmentation:
        """image: [H, W, 3] uint8 RGB -> Segmentation (labels [H, W] or at network size)."""
        start = time.perf_counter()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        x = to_tensor(image, self.device, self.dtype)
        nh, nw = network_size(h, w, self.max_side)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        logits, network_ms = timed(lambda: self.model(x), self.device)
        size = (h, w) if output == "input" else (nh, nw)
        index = upsampled_argmax(logits, size)
        del logits
        if self.label_dtype == np.uint8:
            labels = index.to(torch.uint8).cpu().numpy()
        else:
            labels = index.to(torch.int32).cpu().numpy().astype(self.label_dtype)
        return Segmentation(labels, network_ms, (time.perf_counter() - start) * 1000)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """[H, W] class IDs -> [H, W, 3] uint8 palette colours."""
        return self.palette[np.clip(labels, 0, len(self.palette) - 1)]

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """Blend the colour mask over the image; labels at another size are resized (nearest)."""
        color = self.colorize(labels)
        if color.shape[:2] != image.shape[:2]:
            import cv2
            color = cv2.resize(color, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return (image.astype(np.float32) * (1 - alpha) + color.astype(np.float32) * alpha).round().astype(np.uint8)


def default_palette(n: int) -> list[list[int]]:
    """A fixed, well-spread colour per class for models without a palette."""
    rng = np.random.Generator(np.random.PCG64(12345))
    return rng.integers(0, 256, size=(n, 3)).tolist()

