"""Segmentation: numpy RGB images in, class-ID label images out (torch, no ROS).

The ROS node is a thin adapter over Segmenter; everything here is testable without ROS.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model import MergeConfig, SegFormerPP
from .colors import Palette
from .label_kernel import cell_labels
from .labels import upsampled_argmax
from .loader import PRECISION_WORDS, backend_precisions, load_for_inference, model_forward, precision_name
from .preprocess import PinnedUploads, normalise, upload
from .graphs import after_call
from .timing import DeviceTimer, on_stream


FRAME_PATHS: tuple[str, ...] = ("auto", "fast", "classic")


def network_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """Input size for the network: the image's own, or scaled so its longer side is max_side."""
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(32, round(h * scale)), max(32, round(w * scale))


@dataclass
class Segmentation:
    """One image's result: labels [H, W] (uint8, uint16 above 255 classes), the palette colours
    [H, W, 3] and the overlay [H, W, 3] when asked for, and timings in ms of the call (of its
    whole batch): network_ms the forward pass, total_ms all of it, split further into pre_ms
    (upload, normalisation, resizing to the network input), post_ms (labels from the logits)
    and colour_ms (colours and overlay; on a GPU they are part of post_ms)."""

    labels: np.ndarray
    network_ms: float
    total_ms: float
    color: np.ndarray | None = None
    overlay: np.ndarray | None = None
    pre_ms: float = 0.0
    post_ms: float = 0.0
    colour_ms: float = 0.0


class Segmenter:
    """A loaded segmentation model with its pre- and post-processing.

    labels come back at input resolution (the argmax of the logits resized bilinearly, so
    boundaries are exact to the pixel) or at network resolution (``output="network"``).

    ``frame_path`` chooses how a frame gets there on the CPU. ``fast`` (the CPU's default):
    the uint8 frame is resized (antialiased) to the network size before it is normalised, and
    the labels come from the network-resolution logits cell by cell (segpp_ros.inference.
    label_kernel: no class map is resized; a label differs from the classic one only where two
    classes' interpolated logits tie within float32 rounding). ``classic`` (CUDA's default, and
    the reference): the frame is normalised at full size and resized in float, and every class
    map is resized before the argmax (segpp_ros.inference.labels).

    On a GPU everything between the uint8 upload and the result copy stays on the device
    (normalisation, resizing, upsampling with the argmax, palette colours, overlay), on a CUDA
    stream of the Segmenter's own (another thread's model, e.g. the pose stage's, does not
    wait for it), through CUDA graphs of the forward pass (``cuda_graphs``), and with one
    synchronisation per call: the copy of the results.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "auto",
                 merge: str | MergeConfig | Mapping[str, Any] = "none", max_side: int | None = None,
                 cuda_graphs: bool = True, frame_path: str = "auto", backend: str = "torch",
                 background_compile: bool = False) -> None:
        if frame_path not in FRAME_PATHS:
            raise ValueError(f"frame_path must be one of {', '.join(FRAME_PATHS)}, got {frame_path!r}")
        self.backend, load_precision, self.precision = backend_precisions(backend, precision, device)
        self.model: SegFormerPP
        self.model, self.device, self.dtype, self.weights = load_for_inference(weights, "seg", device, load_precision)
        if self.backend == "torch":
            self.precision = precision_name(self.dtype)
        if frame_path == "fast" and self.device.type != "cpu":
            raise ValueError(f"frame_path 'fast' runs on the CPU; on {self.device} use 'auto' or 'classic' (the "
                             "device path)")
        self.frame_path = ("fast" if self.device.type == "cpu" else "classic") if frame_path == "auto" else frame_path
        self.max_side = max_side
        self.model.set_merge(merge)
        n = self.model.num_outputs
        self.classes = list(self.model.classes or [f"class_{i}" for i in range(n)])
        self.colors = Palette(np.array(self.model.palette or default_palette(n), dtype=np.uint8), self.device)
        self.palette = self.colors.colors
        self._stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self._uploads = PinnedUploads()
        self.forward = model_forward(self.model, self.backend, self.precision, cuda_graphs, background_compile)
        # a CUDA graph for a new input is captured after the call that met it (graphs.py); a
        # frame pipeline defers that until its frame is published (FramePipeline.between_frames)
        self.defer_capture = False
        self.last_cold = False       # the last call ran a new graph key eagerly

    def describe(self) -> str:
        """One line for logs: variant, head, classes, precision, and the backend when compiled."""
        m = self.model
        compiled = f", {self.backend}" if self.backend != "torch" else ""
        return (f"SegFormer++ MiT-{m.spec.name.upper()} ({m.head_type} head, {m.num_outputs} classes, "
                f"{PRECISION_WORDS[self.precision]}{compiled})")

    def network_shape(self, image_hw: tuple[int, int], batch: int = 1) -> tuple[int, int, int, int]:
        """The network input [B, 3, h, w] of images of ``image_hw``: what a compiled model is made for."""
        return (batch, 3, *network_size(*image_hw, self.max_side))

    @property
    def label_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.model.num_outputs <= 256 else np.uint16)

    def set_merge(self, merge: str | MergeConfig | Mapping[str, Any]) -> MergeConfig:
        return self.model.set_merge(merge)

    def __call__(self, image: np.ndarray, output: str = "input", color: bool = False,
                 overlay_alpha: float | None = None) -> Segmentation:
        """image: [H, W, 3] uint8 RGB -> Segmentation (labels [H, W] or at network size; with
        ``color`` the palette colours, with ``overlay_alpha`` the colours blended over the image)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        return self.batch(image[None], output, color, overlay_alpha)[0]

    @torch.inference_mode()
    def batch(self, images: np.ndarray | Sequence[np.ndarray], output: str = "input", color: bool = False,
              overlay_alpha: float | None = None) -> list[Segmentation]:
        """images: [B, H, W, 3] uint8 RGB, or a list of [H, W, 3] images of any sizes that share
        one network input size (several cameras) -> one Segmentation each, from one forward pass;
        network_ms is the batch's, total_ms the whole call's. Each image's labels are the ones it
        gets alone."""
        start = time.perf_counter()
        shapes = {tuple(np.shape(im)) for im in images} if not isinstance(images, np.ndarray) else set()
        if isinstance(images, np.ndarray) or len(shapes) == 1:
            # one image (the single camera of every frame): a view, not a copy
            images = (np.asarray(images) if isinstance(images, np.ndarray)
                      else np.asarray(images[0])[None] if len(images) == 1 else np.stack(images))
            if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
                raise ValueError(f"expected RGB uint8 images [B, H, W, 3], got {images.dtype} {images.shape}")
            groups = [images]
        else:
            for im in images:
                if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                    raise ValueError(f"expected RGB uint8 images [H, W, 3], got {im.dtype} {im.shape}")
            groups = [im[None] for im in images]
        networks = {network_size(*g.shape[1:3], self.max_side) for g in groups}
        if len(networks) != 1:
            raise ValueError(f"one batch needs one network input size; these images give {sorted(networks)}: "
                             "batch the images of each size separately")
        network = networks.pop()
        with self.stream():
            results, timers = self.device_results(groups, output, network, color, overlay_alpha)
            # the one synchronisation of the call
            copied = [tuple(t.cpu().numpy() if t is not None else None for t in r) for r in results]
        colour_start = time.perf_counter()
        if self.device.type != "cuda" and (color or overlay_alpha is not None):
            # on the CPU the colours and the overlay are lookups on the copied labels
            images = [im for g in groups for im in g]
            copied = [(labels, *self._render(labels, image, color, overlay_alpha))
                      for (labels, _, _), image in zip(copied, images)]
        end = time.perf_counter()
        ms = {name: timer.ms() for name, timer in timers.items()}
        after_call(self)
        return [Segmentation(labels if self.label_dtype == np.uint8 else labels.astype(self.label_dtype),
                             ms["network"], (end - start) * 1000, colors, overlay, ms["pre"], ms["post"],
                             (end - colour_start) * 1000) for labels, colors, overlay in copied]

    def stream(self) -> contextlib.AbstractContextManager:
        """The Segmenter's own CUDA stream as the current one (nothing on the CPU)."""
        return on_stream(self._stream)

    def device_results(self, groups: Sequence[np.ndarray], output: str, network: tuple[int, int], color: bool,
                       overlay_alpha: float | None) -> tuple[list[tuple], DeviceTimer]:
        """Everything up to the result copy, queued on the device with no synchronisation:
        groups are [b, H, W, 3] uint8 arrays (one size each) whose network input size is
        ``network``; per image (labels, colours, overlay) device tensors at its own size
        (``output`` 'input') or the network's, and the timers of the three steps (pre, network,
        post)."""
        timers = {name: DeviceTimer(self.device) for name in ("pre", "network", "post")}
        timers["pre"].start()
        pixels, inputs = [], []
        for group in groups:
            uploaded = upload(group, self.device, self._uploads)
            pixels += list(uploaded)
            inputs.append(self._network_input(uploaded, network))
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
        timers["pre"].stop()
        timers["network"].start()
        logits = self.forward(x)
        timers["network"].stop()
        timers["post"].start()
        results = [self._post(logits[i:i + 1], p, tuple(p.shape[:2]) if output == "input" else network, color,
                              overlay_alpha) for i, p in enumerate(pixels)]
        timers["post"].stop()
        return results, timers

    def _network_input(self, images: torch.Tensor, network: tuple[int, int]) -> torch.Tensor:
        """uint8 [b, H, W, 3] on the device -> the network's input [b, 3, h, w] in its dtype."""
        if network == tuple(images.shape[1:3]):
            return normalise(images, self.dtype)
        if self.frame_path == "fast":
            # resized as uint8 (PyTorch's antialiased uint8 kernel, channels last: the same
            # filter as the float resize, rounded to whole grey levels), then normalised small
            small = F.interpolate(images.permute(0, 3, 1, 2), size=network, mode="bilinear", align_corners=False,
                                  antialias=True)
            return normalise(small.permute(0, 2, 3, 1), self.dtype)
        # PyTorch's CPU kernel for antialiased resizing has no 16-bit version: there an image is
        # normalised and resized in float32, then cast (CUDA resizes in the network's precision)
        resize_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        return F.interpolate(normalise(images, resize_dtype), size=network, mode="bilinear", align_corners=False,
                             antialias=True).to(self.dtype)

    def _post(self, logits: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int], color: bool,
              overlay_alpha: float | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """On the device: labels [H, W], and on a GPU the colours / overlay when asked for (the
        CPU makes those from the copied labels, see ``batch``)."""
        if self.frame_path == "fast" and size != tuple(logits.shape[2:]):
            # no tensor leaves the CPU: the kernel's NumPy labels, wrapped for the common copy
            return torch.from_numpy(cell_labels(logits[0].float().numpy(), size, self.label_dtype)), None, None
        index = upsampled_argmax(logits, size)
        labels = index.to(torch.uint8 if self.label_dtype == np.uint8 else torch.int32)
        if self.device.type != "cuda":
            return labels, None, None
        return (labels, *self._render(index, pixels, color, overlay_alpha))

    def _render(self, labels: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor, color: bool,
                overlay_alpha: float | None) -> tuple[Any, Any]:
        """(colours or None, overlay or None) of labels [h, w] over image [H, W, 3], both NumPy or
        both tensors on the device."""
        if not color and overlay_alpha is None:
            return None, None
        colors = self.colors.colorize(labels)
        overlay = self.colors.overlay(image, colors, overlay_alpha) if overlay_alpha is not None else None
        return colors if color else None, overlay

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """[H, W] class IDs -> [H, W, 3] uint8 palette colours."""
        return self.colors.colorize(labels)

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """Blend the colour mask over the image; labels at another size are resized (nearest)."""
        return self.colors.overlay(image, self.colors.colorize(labels), alpha)


def default_palette(n: int) -> list[list[int]]:
    """A fixed, well-spread colour per class for models without a palette."""
    rng = np.random.Generator(np.random.PCG64(12345))
    return rng.integers(0, 256, size=(n, 3)).tolist()

