"""Keypoint heatmaps: Gaussian targets for training and sub-pixel decoding for inference.

Convention (shared by encoding and decoding, MSRA/mmpose style): a keypoint at input pixel
(x, y) (pixel centres at integer coordinates) sits at heatmap coordinate (x / stride, y / stride),
and heatmap pixel (i, j) is sampled at coordinate (j, i). Decoding inverts this exactly, so
encode -> decode round-trips. Mirroring an input (x -> w - 1 - x) maps heatmap coordinates
u -> (w - 1) / stride - u, not the heatmap's own mirror u -> w / stride - 1 - u: flip testing
must shift the mirrored heatmaps by the difference, (stride - 1) / stride heatmap px.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_heatmaps", "decode_heatmaps"]


def gaussian_heatmaps(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int = 4,
                      sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for keypoints [K, 3] (x, y in input px, v) of an input of size out_hw.

    Returns heatmaps [K, ceil(h / stride), ceil(w / stride)] float32: an unnormalised Gaussian
    exp(-d^2 / (2 sigma^2)) with its peak 1.0 at the sub-pixel location (x / stride, y / stride),
    evaluated over the whole map (no rounding of the centre, no 3-sigma window, so the target is
    exactly log-quadratic, which is what DARK decoding assumes); and weights [K] float32: 0 for
    v == 0 or a keypoint outside the input (its map is all zeros), 1 otherwise.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    h, w = int(out_hw[0]), int(out_hw[1])
    hh, hw = math.ceil(h / stride), math.ceil(w / stride)
    x, y, v = kp[:, 0], kp[:, 1], kp[:, 2]
    valid = (v > 0) & (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5) & np.isfinite(x) & np.isfinite(y)
    mx, my = np.where(valid, x, 0.0) / stride, np.where(valid, y, 0.0) / stride
    gx = np.exp(-((np.arange(hw)[None, :] - mx[:, None]) ** 2) / (2 * sigma ** 2))   # separable: [K, hw]
    gy = np.exp(-((np.arange(hh)[None, :] - my[:, None]) ** 2) / (2 * sigma ** 2))   # [K, hh]
    heatmaps = (gy[:, :, None] * gx[:, None, :]) * valid[:, None, None]
    return heatmaps.astype(np.float32), valid.astype(np.float32)


def _gaussian_kernel(size: int, device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """1-D Gaussian [size] with OpenCV's default sigma for that size (11 -> 2.0, as DARK)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def _blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable convolution of maps [N, 1, h, w] with a 1-D kernel [k], zero padding."""
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, len(k) // 2))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(len(k) // 2, 0))


def _quarter_offsets(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """[N, 2] shift of 0.25 px from the argmax towards the higher neighbour, per axis, where both
    neighbours exist (the MSRA rule); maps [N, h, w], px/py [N] long."""
    n, h, w = maps.shape
    rows = torch.arange(n, device=maps.device)
    off = torch.zeros(n, 2, dtype=torch.float32, device=maps.device)
    ok = (px > 0) & (px < w - 1)
    dx = maps[rows, py, (px + 1).clamp(max=w - 1)] - maps[rows, py, (px - 1).clamp(min=0)]
    off[:, 0] = torch.where(ok, 0.25 * torch.sign(dx), off[:, 0])
    ok = (py > 0) & (py < h - 1)
    dy = maps[rows, (py + 1).clamp(max=h - 1), px] - maps[rows, (py - 1).clamp(min=0), px]
    off[:, 1] = torch.where(ok, 0.25 * torch.sign(dy), off[:, 1])
    return off


def _dark_offsets(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kernel: int,
                  dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """DARK (Zhang et al., CVPR 2020): smooth each map with a Gaussian (restoring its maximum),
    take the log, and solve the second-order Taylor expansion at the argmax for the peak:
    offset = -H^-1 g. Returns offsets [N, 2] and where they are valid [N] bool: the Hessian is
    negative definite, the offset within 1 px and the argmax >= 3 px from the border (nearer, the
    zero-padded smoothing biases the peak by more than the quarter rule's worst case).
    ``dtype``: the arithmetic (float64 on the CPU; float32 on GPUs, where float64 is slow)."""
    n, h, w = maps.shape
    x = maps[:, None].to(dtype)                                              # logs of small values
    if kernel > 1:
        k = _gaussian_kernel(kernel, maps.device, dtype)
        peak = x.amax(dim=(2, 3), keepdim=True)
        x = _blur(x, k)                                       # zero padding, as the DARK reference
        x = x * (peak / x.amax(dim=(2, 3), keepdim=True).clamp(min=1e-10))
    lg = torch.log(x[:, 0].clamp(min=1e-10))
    lg = F.pad(lg[:, None], (2, 2, 2, 2), mode="replicate")[:, 0]          # safe +-2 indexing
    rows = torch.arange(n, device=maps.device)
    cx, cy = px + 2, py + 2

    def at(dy: int, dx: int) -> torch.Tensor:
        return lg[rows, cy + dy, cx + dx]

    c = at(0, 0)
    gx, gy = 0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))
    hxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    hyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    safe_det = torch.where(det.abs() > 1e-12, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe_det                                   # -H^-1 g, 2x2 closed form
    oy = -(-hxy * gx + hxx * gy) / safe_det
    off = torch.stack([ox, oy], dim=1)
    valid = (px >= 3) & (px <= w - 4) & (py >= 3) & (py <= h - 4) & (hxx < 0) & (det > 1e-12) \
        & (off.abs() <= 1.0).all(dim=1)
    return off.to(torch.float32), valid


def decode_heatmaps(heatmaps: np.ndarray | torch.Tensor, stride: int = 4, refine: str = "dark",
                    kernel: int = 11, dtype: torch.dtype | None = None) -> np.ndarray:
    """Keypoints from heatmaps [..., K, h, w] -> [..., K, 3] float32 (x, y in input px, score).

    score is the heatmap maximum; x, y start at the argmax and are refined to sub-pixel:
    - refine="quarter": 0.25 heatmap px towards the higher neighbour per axis (MSRA);
    - refine="dark" (default): DARK's Taylor expansion of the log of the Gaussian-smoothed map
      (``kernel``: smoothing size, 11 suits sigma 2 targets; 1 disables smoothing). Where it does
      not apply (argmax within 3 px of the border, not a maximum) the quarter rule is used.
    - refine="none": the argmax pixel.
    Runs on the input's device (a CUDA tensor stays on the GPU until the result is copied back),
    in ``dtype``: by default float64 on the CPU and float32 on a GPU (no float64 there; on held-out
    maps the two agree to 1e-3 px, tested).
    """
    if refine not in ("dark", "quarter", "none"):
        raise ValueError(f"refine must be 'dark', 'quarter' or 'none', not {refine!r}")
    t = torch.as_tensor(heatmaps).detach()
    if t.dim() < 3:
        raise ValueError(f"heatmaps must be [..., K, h, w], got shape {tuple(t.shape)}")
    lead, (h, w) = t.shape[:-2], t.shape[-2:]
    maps = t.reshape(-1, h, w).to(torch.float32)
    score, idx = maps.reshape(maps.shape[0], -1).max(dim=1)
    px, py = idx % w, idx // w
    off = torch.zeros(maps.shape[0], 2, dtype=torch.float32, device=maps.device)
    if refine != "none":
        off = _quarter_offsets(maps, px, py)
    if refine == "dark":
        dtype = dtype or (torch.float64 if maps.device.type == "cpu" else torch.float32)
        dark, ok = _dark_offsets(maps, px, py, kernel, dtype)
        off = torch.where(ok[:, None], dark, off)
    xy = (torch.stack([px, py], dim=1).to(torch.float32) + off) * stride
    out = torch.cat([xy, score[:, None]], dim=1)
    return out.reshape(*lead, 3).cpu().numpy()
