"""The exactness rule of labels at full resolution, in real arithmetic (float64), for the tests of
the CPU kernel (test_label_kernel.py) and of the CUDA device path (test_cuda.py).

A label image made from logits [C, h, w] is exact when every pixel holds the class of the
largest bilinearly interpolated logit (PyTorch's sample positions and weights, align_corners
False), except where the best two interpolated logits are within ``RELATIVE`` of each other:
there either of the near-tied classes may stand. Relative to the magnitude of the logits the
pixel is interpolated from (the largest |logit| at its four corners): float32 rounding is
proportional to the corner values, not to the interpolated result, which may cancel to ~0.
"""
from __future__ import annotations

import numpy as np

from segpp_ros.inference.label_kernel import sample_grid

RELATIVE = 1e-5


def interpolated(logits: np.ndarray, size: tuple[int, int], ys: np.ndarray,
                 xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [n, C] float64, scale [n]) at the pixels (ys, xs) of an upsampling to ``size``:
    the interpolated logits of every class, and the largest |logit| at each pixel's corners."""
    logits = np.asarray(logits, np.float64)
    y0, y1, wy0, wy1 = sample_grid(logits.shape[1], size[0])
    x0, x1, wx0, wx1 = sample_grid(logits.shape[2], size[1])
    a0, a1, r0, r1 = wy0[ys].astype(np.float64), wy1[ys].astype(np.float64), y0[ys], y1[ys]
    b0, b1, c0, c1 = wx0[xs].astype(np.float64), wx1[xs].astype(np.float64), x0[xs], x1[xs]
    v00, v01, v10, v11 = (logits[:, r, c].T for r, c in ((r0, c0), (r0, c1), (r1, c0), (r1, c1)))
    values = (v00 * b0[:, None] + v01 * b1[:, None]) * a0[:, None] + (v10 * b0[:, None] + v11 * b1[:, None]) * a1[:, None]
    scale = np.max(np.abs(np.stack([v00, v01, v10, v11])), axis=(0, 2))
    return values, scale


def violations(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """Check ``labels`` [H, W] made from ``logits`` [C, h, w]; at the pixels where they differ
    from ``reference`` (e.g. PyTorch's labels; all pixels when None) every label must be within the
    rule. Returns {'checked', 'differing', 'bad'} counts and the worst relative gap of a bad one."""
    labels = np.asarray(labels).astype(np.int64)
    if reference is None:
        ys, xs = np.indices(labels.shape).reshape(2, -1)
    else:
        ys, xs = np.nonzero(labels != np.asarray(reference))
    out = {"checked": int(ys.size), "differing": int(ys.size) if reference is not None else None, "bad": 0,
           "worst": 0.0}
    for start in range(0, ys.size, 65536):          # a bounded float64 block at a time
        y, x = ys[start:start + 65536], xs[start:start + 65536]
        values, scale = interpolated(logits, labels.shape, y, x)
        best = values.max(axis=1)
        mine = values[np.arange(y.size), labels[y, x]]
        gap = (best - mine) / np.maximum(scale, 1e-30)
        wrong = gap > RELATIVE
        out["bad"] += int(wrong.sum())
        out["worst"] = max(out["worst"], float(gap.max(initial=0.0)))
    return out
