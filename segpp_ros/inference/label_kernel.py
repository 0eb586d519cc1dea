"""Labels at full resolution from network-resolution logits, without full-resolution class maps.

The classic path (``labels.upsampled_argmax``) resizes every class map bilinearly to the image
and takes the argmax: C x H x W interpolations, most of them wasted. Bilinear interpolation is a
convex combination of the four network-resolution neighbours of a pixel (its cell's corners), so

- where the four corners agree on their best class, that class wins everywhere in the cell
  (its margin over any other class is a convex combination of non-negative margins): the cell
  is filled, nothing interpolated;
- elsewhere, a class whose largest corner value is below some class's smallest corner value
  can never win in the cell (its interpolation is at most the former, the other's at least the
  latter): only the remaining candidates are interpolated, pixel by pixel, lowest class first,
  a later class winning only when strictly greater (the first maximum, as ``max`` keeps it).

Both rules are exact in real arithmetic. The interpolation uses PyTorch's sample positions and
weights (align_corners False, computed in float32 as its CPU kernel computes them) and its
order of operations, in float32; a label may differ from PyTorch's only where the two best
interpolated logits are within float32 rounding of each other (the tests hold it to 1e-5 of the
logits' magnitude). Memory: the labels and a few per-cell scalars, never C x H x W.

numba compiles the kernel on first use (about a second, then cached on disk beside this file or
in numba's cache folder); it runs on the CPU, holding no GIL.
"""
from __future__ import annotations

import numba
import numpy as np


def sample_grid(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear sampling along one axis (align_corners False, no scale factor), in
    float32 as its CPU kernel computes it: for each of ``target`` output positions the two
    source indices i0 <= i1 and their weights w0 + w1 = 1 ([target] each; int32, int32, float32,
    float32). src = (dst + 0.5) * source / target - 0.5, clamped at 0; i0 = floor(src) (at most
    source - 1), i1 = i0 + 1 except at the last index."""
    scale = np.float32(source) / np.float32(target)
    src = scale * (np.arange(target, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int32), source - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    i1 = (i0 + (i0 < source - 1)).astype(np.int32)
    return i0, i1, (np.float32(1.0) - w1).astype(np.float32), w1


def cell_bounds(i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    """Where the runs of output positions with the same two source indices (one cell along this
    axis) start, and the end: [cells + 1] int32."""
    change = np.flatnonzero((i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])) + 1
    return np.concatenate([[0], change, [len(i0)]]).astype(np.int32)


@numba.njit(cache=True, nogil=True)
def _fill_labels(logits: np.ndarray, y0: np.ndarray, y1: np.ndarray, wy0: np.ndarray, wy1: np.ndarray,
                 rows: np.ndarray, x0: np.ndarray, x1: np.ndarray, wx0: np.ndarray, wx1: np.ndarray,
                 cols: np.ndarray, out: np.ndarray) -> int:
    """logits [C, h, w] float32 -> out [H, W] (class ids) by cells (see the module docstring;
    ``rows`` and ``cols`` are the cells' bounds, ``cell_bounds``); returns the number of
    candidate interpolations made (for the benchmarks)."""
    classes, h, w = logits.shape
    # the best class at every network-resolution position (first maximum)
    best = np.empty((h, w), np.int32)
    for i in range(h):
        for j in range(w):
            k = 0
            v = logits[0, i, j]
            for c in range(1, classes):
                if logits[c, i, j] > v:
                    v = logits[c, i, j]
                    k = c
            best[i, j] = k
    candidates = np.empty(classes, np.int32)
    interpolations = 0
    for row in range(len(rows) - 1):
        ya, yb = rows[row], rows[row + 1]
        r0, r1 = y0[ya], y1[ya]
        for col in range(len(cols) - 1):
            xa, xb = cols[col], cols[col + 1]
            c0, c1 = x0[xa], x1[xa]
            k = best[r0, c0]
            if k == best[r0, c1] and k == best[r1, c0] and k == best[r1, c1]:
                for yy in range(ya, yb):
                    for xx in range(xa, xb):
                        out[yy, xx] = k
            else:
                # the largest smallest-corner value of any class bounds the winner from below
                floor_ = -np.inf
                for c in range(classes):
                    lo = min(min(logits[c, r0, c0], logits[c, r0, c1]), min(logits[c, r1, c0], logits[c, r1, c1]))
                    if lo > floor_:
                        floor_ = lo
                n = 0
                for c in range(classes):
                    hi = max(max(logits[c, r0, c0], logits[c, r0, c1]), max(logits[c, r1, c0], logits[c, r1, c1]))
                    if hi >= floor_:
                        candidates[n] = c
                        n += 1
                for yy in range(ya, yb):
                    a0, a1 = wy0[yy], wy1[yy]
                    for xx in range(xa, xb):
                        b0, b1 = wx0[xx], wx1[xx]
                        top = candidates[0]
                        # PyTorch's order: (v00 w0 + v01 w1) h0 + (v10 w0 + v11 w1) h1
                        vmax = (logits[top, r0, c0] * b0 + logits[top, r0, c1] * b1) * a0 \
                            + (logits[top, r1, c0] * b0 + logits[top, r1, c1] * b1) * a1
                        for t in range(1, n):
                            c = candidates[t]
                            v = (logits[c, r0, c0] * b0 + logits[c, r0, c1] * b1) * a0 \
                                + (logits[c, r1, c0] * b0 + logits[c, r1, c1] * b1) * a1
                            if v > vmax:
                                vmax = v
                                top = c
                        out[yy, xx] = top
                interpolations += n * (yb - ya) * (xb - xa)
    return interpolations


def cell_labels(logits: np.ndarray, size: tuple[int, int], dtype: np.dtype = np.dtype(np.uint8)) -> np.ndarray:
    """logits [C, h, w] (float32, any strides) -> labels [H, W] of ``dtype`` for ``size`` = (H, W):
    the class of the largest bilinearly upsampled logit at each pixel (see the module docstring)."""
    labels, _ = cell_labels_counted(logits, size, dtype)
    return labels


def cell_labels_counted(logits: np.ndarray, size: tuple[int, int],
                        dtype: np.dtype = np.dtype(np.uint8)) -> tuple[np.ndarray, int]:
    """cell_labels and the number of candidate interpolations it made (C x H x W for the classic path)."""
    if logits.ndim != 3:
        raise ValueError(f"expected logits [C, h, w], got {logits.shape}")
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    height, width = size
    out = np.empty((height, width), dtype)
    y0, y1, wy0, wy1 = sample_grid(logits.shape[1], height)
    x0, x1, wx0, wx1 = sample_grid(logits.shape[2], width)
    count = _fill_labels(logits, y0, y1, wy0, wy1, cell_bounds(y0, y1), x0, x1, wx0, wx1, cell_bounds(x0, x1), out)
    return out, int(count)
