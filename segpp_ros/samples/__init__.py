"""Bundled sample camera sequence for the ROS demo (regenerate with
``python -m segpp_ros.cli.samples``)."""
from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_frames() -> list[Path]:
    """The bundled JPEG frames (frame_000.jpg, ...), sorted by name."""
    return sorted(SAMPLES_DIR.glob("frame_*.jpg"))
