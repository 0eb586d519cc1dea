"""Top-down pose crops: the affine maps between image and crop pixels, warping on the CPU
(OpenCV) and on a GPU (grid_sample).

Shared by inference (crops around detected boxes) and training (crops around the persons of
synthetic scenes). Image and crop use pixel centres at integer coordinates: a crop of width w
spans [-0.5, w - 0.5] and its centre is at (w - 1) / 2.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def box_to_affine(box: np.ndarray, out_hw: tuple[int, int], padding: float = 1.25) -> np.ndarray:
    """[2, 3] float64 affine mapping image px -> crop px for a box [4] (x0, y0, x1, y1).

    The box centre goes to the crop centre; the box is scaled by ``padding`` and widened or
    heightened to the crop's aspect ratio (the relatively larger side decides), so the figure is
    never squashed and never cut by the crop.
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    w, h = max(x1 - x0, 1.0) * padding, max(y1 - y0, 1.0) * padding   # degenerate boxes: >= 1 px
    aspect = out_w / out_h
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    s = out_w / w                                                    # == out_h / h
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[s, 0.0, (out_w - 1) / 2 - s * cx],
                     [0.0, s, (out_h - 1) / 2 - s * cy]])


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """[2, 3] -> [2, 3]: the inverse map (crop px -> image px)."""
    a = np.asarray(affine, dtype=np.float64)
    lin = np.linalg.inv(a[:, :2])
    return np.concatenate([lin, -lin @ a[:, 2:]], axis=1)


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points [..., 2] -> [..., 2] under an affine [2, 3] (float64)."""
    p = np.asarray(points, dtype=np.float64)
    a = np.asarray(affine, dtype=np.float64)
    return p @ a[:, :2].T + a[:, 2]


def warp_crop(image: np.ndarray, affine: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Crop [h, w, ...] of an image under an image->crop affine: bilinear, black outside the image.
    OpenCV's warpAffine uses the same integer pixel-centre convention as this module."""
    return cv2.warpAffine(image, np.asarray(affine, dtype=np.float64), (int(out_hw[1]), int(out_hw[0])),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_crops_torch(image: torch.Tensor, affines: np.ndarray, out_hw: tuple[int, int]) -> torch.Tensor:
    """Crops [N, C, h, w] of image [1, C, H, W] (any float tensor, on any device) under image->crop
    affines [N, 2, 3]: bilinear, zero outside the image, the pixel-centre convention of
    ``warp_crop``. On a GPU the frame is uploaded once and cropped there (grid_sample), instead
    of N crops warped on the CPU and uploaded; agrees with OpenCV's warpAffine to within its
    fixed-point interpolation (1/32 px weights)."""
    H, W = image.shape[-2:]
    h, w = int(out_hw[0]), int(out_hw[1])
    inverse = np.stack([invert_affine(a) for a in affines])              # crop px -> image px
    # grid_sample's normalised coordinates (align_corners=False): u = (2 x + 1) / W - 1, so the
    # crop-px -> normalised map is N_img . A^-1 . N_crop^-1 (all affine)
    n_img = np.array([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]])
    n_crop_inv = np.array([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]])
    full = np.concatenate([inverse, np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(inverse), 1, 3))], axis=1)
    theta = (n_img @ full @ n_crop_inv)[:, :2]
    theta_t = torch.as_tensor(theta, dtype=torch.float32).to(image.device, non_blocking=True)
    grid = F.affine_grid(theta_t, [len(theta), image.shape[1], h, w], align_corners=False)
    return F.grid_sample(image.expand(len(theta), -1, -1, -1), grid.to(image.dtype), mode="bilinear",
                         padding_mode="zeros", align_corners=False)
