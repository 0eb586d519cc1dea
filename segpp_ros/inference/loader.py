"""Loading a model for inference: device and precision resolved, backend tuned, embedded default weights."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import torch

from ..model import SegFormerPP, load_model
from ..model.runtime import keep_freed_memory

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_CHOICES = ("auto", *PRECISIONS)
# how logs name a precision (as torch names its dtypes)
PRECISION_WORDS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


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


def precision_name(dtype: torch.dtype) -> str:
    """The precision choice that names ``dtype`` (what ``auto`` resolved to)."""
    return next(name for name, value in PRECISIONS.items() if value == dtype)


def tune_backend(device: torch.device) -> None:
    """On CUDA: cuDNN picks the fastest convolution per input size (benchmark mode). float32 stays
    float32: no TF32 in matmuls or convolutions. The merge strategies score token similarity in
    fp32 precisely so that near-ties resolve as on the CPU; TF32's 10-bit mantissa would tie
    them again (and the MLPs and attention are matmuls too). Whether TF32 in the convolutions
    alone leaves the labels unchanged is what tools/gpu-check measures (TF32 on/off agreement);
    until a GPU run shows it, fp32 means IEEE fp32 everywhere. fp16 and bf16 are unaffected."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def resolve_device(device: str) -> torch.device:
    """'auto' picks the first CUDA device when there is one; 'cuda[:N]' must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


# owner/name[@revision] as the Hugging Face Hub spells model IDs
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
# what a SegFormer model repository holds that we read: config and weights, not TF/Flax files
HUB_FILES = ("*.json", "*.safetensors", "*.bin")


def resolve_weights(weights: str | os.PathLike) -> Path:
    """A weights path, or a Hugging Face model ID (``owner/name[@revision]``, when no such path
    exists) resolved to its folder in the huggingface_hub cache, downloading it when online.
    Offline with nothing cached: ValueError naming the ID, HF_HUB_OFFLINE and the cache folder."""
    path = Path(weights)
    match = HUB_ID.fullmatch(str(weights))
    if path.exists() or match is None:
        return path
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo, revision = match["repo"], match["revision"]
    try:
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=list(HUB_FILES),
                                                      local_files_only=bool(constants.HF_HUB_OFFLINE)))
    except LocalEntryNotFoundError:
        raise ValueError(f"the Hugging Face model {weights} is not in the cache ({constants.HF_HUB_CACHE}) and the "
                         f"Hub cannot be reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}): "
                         "download it once online, or give a local file") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{weights} is neither a file nor a Hugging Face model ID the Hub knows") from None
    except (HfHubHTTPError, OSError) as err:
        raise ValueError(f"cannot fetch the Hugging Face model {weights}: {err}") from None


def load_for_inference(weights: str | os.PathLike | None, task: str, device: str,
                       precision: str) -> tuple[SegFormerPP, torch.device, torch.dtype, str]:
    """(model, device, dtype, weights path) for an inference wrapper; weights None = the
    embedded default model of ``task``. Errors name the file or the bad setting."""
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if weights is None:
        from ..weights import default_weights
        weights = default_weights(task)
    else:
        weights = resolve_weights(weights)
    keep_freed_memory()
    tune_backend(dev)
    # the task check makes a checkpoint of the other task a CheckpointError naming the file;
    # loaded in float32 on the CPU so the folded inference tensors are computed at full
    # precision, then cast once
    model = load_model(weights, task=task).fold_for_inference()
    return model.to(device=dev, dtype=dtype), dev, dtype, str(weights)


def backend_precisions(backend: str, precision: str, device: str) -> tuple[str, str, str]:
    """(backend, precision the PyTorch model is loaded in, precision of the compiled model) for
    a wrapper's ``backend`` and ``precision`` settings. OpenVINO compiles from the float32 model
    (which also serves the frames of a key still being compiled) at fp32 or bf16; torch runs the
    model in its own precision (the third value is then the same)."""
    from .compiled import resolve_backend

    resolved = resolve_backend(backend, resolve_device(device))
    if resolved in ("torch", "inductor"):
        return resolved, precision, precision
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"backend 'openvino' runs precision fp32 or bf16 on the CPU, not {precision!r}")
    return resolved, "fp32", "bf16" if precision == "bf16" else "fp32"


def model_forward(model: SegFormerPP, backend: str, compiled_precision: str, cuda_graphs: bool,
                  background_compile: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward pass a wrapper calls: the model through CUDA graphs (eager on the CPU) for
    'torch', the compiled graphs for 'openvino' (with the threads PyTorch uses now), torch.compile's
    functions for 'inductor'."""
    if backend == "openvino":
        from .compiled import OpenVINOForward

        return OpenVINOForward(model, key=lambda: model.merge, precision=compiled_precision,
                               threads=torch.get_num_threads(), background=background_compile)
    if backend == "inductor":
        from .inductor import InductorForward

        return InductorForward(model, key=lambda: model.merge)
    from .graphs import GraphedForward

    return GraphedForward(model, key=lambda: model.merge, enabled=cuda_graphs)
