"""Loading a model for inference: device and precision resolved, backend tuned, embedded default weights."""
from __future__ import annotations

import os

import torch

from ..model import SegFormerPP, load_model
from ..model.runtime import keep_freed_memory

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_CHOICES = ("auto", *PRECISIONS)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is float16 on CUDA and float32 on the CPU; bfloat16 on CUDA needs a GPU that has it."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' requested but {torch.cuda.get_device_name(device)} does not support "
                         "bfloat16; use 'fp16' or 'auto'")
    return PRECISIONS[precision]


def tune_backend(device: torch.device) -> None:
    """On CUDA: cuDNN picks the fastest convolution per input size (benchmark mode), and float32
    matmuls and convolutions may use TF32 (the precision users of fp32 expect on a GPU)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if weights is None:
        from ..weights import default_weights
        weights = default_weights(task)
    keep_freed_memory()
    tune_backend(dev)
    # the task check makes a checkpoint of the other task a CheckpointError naming the file;
    # loaded in float32 on the CPU so the folded inference tensors are computed at full
    # precision, then cast once
    model = load_model(weights, task=task).fold_for_inference()
    return model.to(device=dev, dtype=dtype), dev, dtype, str(weights)
