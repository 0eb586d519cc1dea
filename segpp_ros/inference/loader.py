"""Loading a model for inference: device and precision resolved, embedded default weights."""
from __future__ import annotations

import os

import torch

from ..model import SegFormerPP, load_model
from ..model.runtime import keep_freed_memory

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """'auto' picks the first CUDA device when there is one; 'cuda[:N]' must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def load_for_inference(weights: str | os.PathLike | None, task: str, device: str,
                       precision: str) -> tuple[SegFormerPP, torch.device, torch.dtype, str]:
    """(model, device, dtype, weights path) for an inference wrapper; weights None = the
    embedded default model of ``task``. Errors name the file or the bad setting."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    if weights is None:
        from ..weights import default_weights
        weights = default_weights(task)
    keep_freed_memory()
    dtype = PRECISIONS[precision]
    # the task check makes a checkpoint of the other task a CheckpointError naming the file;
    # loaded in float32 on the CPU so the folded inference tensors are computed at full
    # precision, then cast once
    model = load_model(weights, task=task).fold_for_inference()
    return model.to(device=dev, dtype=dtype), dev, dtype, str(weights)
