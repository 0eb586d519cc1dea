"""The bundled sample sequence (segpp_ros/samples): held-out synthetic street scenes as JPEGs.

Regenerate it with ``python -m segpp_ros.cli.samples [--out DIR] [--quality Q]``.

Seeds HELD_OUT_SEED_BASE + 100 + i are past the evaluation scenes of the offline demo and
never used for training, so the demo shows the model on images it has not seen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.scenes import render_scene
from .train import HELD_OUT_SEED_BASE

COUNT = 12
HEIGHT, WIDTH = 512, 1024
QUALITY = 90
SEED_OFFSET = 100  # above the offline demo's held-out scenes


def sample_seed(index: int) -> int:
    """Generator seed of sample frame ``index``."""
    return HELD_OUT_SEED_BASE + SEED_OFFSET + index


def render_frame(index: int) -> np.ndarray:
    """RGB uint8 [HEIGHT, WIDTH, 3] image of sample frame ``index``."""
    return render_scene(sample_seed(index), HEIGHT, WIDTH).image


def write_samples(out: Path, count: int = COUNT, quality: int = QUALITY) -> list[Path]:
    """Render and write frame_000.jpg ... into ``out``; returns the written paths."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out / f"frame_{i:03d}.jpg"
        bgr = cv2.cvtColor(render_frame(i), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths
