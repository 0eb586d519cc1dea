"""Embedded default models shipped inside the package (used when no weights are given).

Both are MiT-B0 trained from scratch on the synthetic street scenes of segpp_ros.training.data (see
docs/training.md, "Embedded default models", for the exact command, seed and commit).
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = {
    "seg": _HERE / "segpp_b0_synthstreet_seg.safetensors",
    "pose": _HERE / "segpp_b0_synthstreet_pose.safetensors",
}


def default_weights(task: str) -> Path:
    """Path of the embedded model for ``task`` ('seg' or 'pose')."""
    if task not in DEFAULT_WEIGHTS:
        raise ValueError(f"no embedded model for task {task!r}; tasks: {', '.join(DEFAULT_WEIGHTS)}")
    path = DEFAULT_WEIGHTS[task]
    if not path.is_file():
        raise FileNotFoundError(f"embedded {task} model {path} is missing from this installation; "
                                "reinstall segpp or pass explicit weights")
    return path
