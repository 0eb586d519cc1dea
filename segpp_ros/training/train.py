"""Training on the synthetic data: datasets, loss, schedule, loop, checkpoints, preset timing.

Data is an endless stream of deterministic samples: sample i of a run is rendered from seed
``config.seed + i`` and its augmentation is drawn from that seed too, so any worker renders
the same sample and a resumed run sees exactly the batches the uninterrupted one would have.
Seeds from HELD_OUT_SEED_BASE up are the evaluation set and are refused for training.

The CLI is segpp_ros.cli.train (``segpp-train`` / ``python -m segpp_ros.cli.train``).
"""
from __future__ import annotations

import copy
import math
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..inference.preprocess import to_tensor
from ..inference.timing import markdown_table, peak_memory_mb, rotated, timed
from ..inference.vocab import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON
from ..model import PRESETS, MiTSpec, SegFormerPP, build_model, get_spec, load_model, save_model
from ..model.segformer import TASKS
from .data.classes import IGNORE_INDEX

Tensor = torch.Tensor
Batch = dict[str, Tensor]

HELD_OUT_SEED_BASE = 10_000_000      # evaluation seeds start here; training never reaches them
LAST_CHECKPOINT = "last.pt"
FINAL_MODEL = "model.safetensors"
CHECKPOINT_FORMAT = "segpp-train/1"
LOSS_WINDOW = 20                     # "final loss" is the mean of the last steps: one step is noisy
STRIDE = 4                           # output stride of every head


# --- configuration ---------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything that defines a run; RUNTIME_FIELDS may differ when it is resumed."""

    task: str = "seg"
    variant: str | MiTSpec = "b0"
    num_outputs: int | None = None               # classes (seg) / keypoints (pose); None: 19 / 17
    head: str = "mmseg"
    merge: str = "none"
    crop: tuple[int, int] = (384, 384)           # seg: training crop (h, w)
    scale_range: tuple[int, int] = (512, 1024)   # seg: rendered height range; width = 2 * height
    input_size: tuple[int, int] = (256, 192)     # pose: input (h, w)
    steps: int = 20000
    batch_size: int = 8
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup_steps: int = 1500
    grad_clip: float = 0.0                       # max gradient norm; 0: off
    drop_path: float = 0.1
    seed: int = 0
    init: str | None = None                      # start from these weights (fine-tuning); None: random
    # runtime: how, not what, is trained
    workers: int = 1
    device: str = "cpu"
    out: str | None = None
    ckpt_every: int = 1000
    log_every: int = 50
    fp16: bool = False
    command: str = ""
    commit: str | None = None                    # source commit when the run was defined

    @property
    def outputs(self) -> int:
        if self.num_outputs is not None:
            return self.num_outputs
        return len(CITYSCAPES_CLASSES) if self.task == "seg" else len(COCO_KEYPOINTS)

    @property
    def sample_hw(self) -> tuple[int, int]:
        """Size of the network input."""
        return self.crop if self.task == "seg" else self.input_size

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        checks = [
            (self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}"),
            (self.merge in PRESETS, f"unknown merge preset {self.merge!r}; use one of {', '.join(PRESETS)}"),
            (self.outputs >= 1, f"num_outputs must be >= 1, got {self.num_outputs}"),
            (min(self.sample_hw) >= 32, f"network input {self.sample_hw} must be at least 32x32"),
            (32 <= self.scale_range[0] <= self.scale_range[1], f"bad scale range {self.scale_range}"),
            (self.steps >= 1 and self.batch_size >= 1, "steps and batch size must be >= 1"),
            (self.warmup_steps >= 0 and self.lr > 0 and self.weight_decay >= 0, "bad lr/warm-up/weight decay"),
            (self.workers >= 0 and self.ckpt_every >= 1 and self.log_every >= 1, "bad workers/ckpt/log interval"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        get_spec(self.variant)
        check_training_seeds(training_seeds(self))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists, not tuples): stored in last.pt and the model metadata."""
        d = asdict(self)
        d["variant"] = get_spec(self.variant).to_dict() if isinstance(self.variant, MiTSpec) else self.variant
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        if isinstance(values.get("variant"), Mapping):
            values["variant"] = MiTSpec.from_dict(dict(values["variant"]))
        return cls(**values)


RUNTIME_FIELDS = frozenset({"workers", "device", "out", "ckpt_every", "log_every", "fp16", "command", "commit"})


def defining_changes(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """'name: saved -> new' for every run-defining field that differs."""
    a, b = saved.to_dict(), new.to_dict()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in RUNTIME_FIELDS and a[k] != b[k]]


# --- seeds ------------------------------------------------------------------------------------

def training_seeds(config: TrainConfig) -> range:
    """Seeds of every sample of the run, in order: sample i uses seed ``config.seed + i``."""
    return range(config.seed, config.seed + config.steps * config.batch_size)


def check_training_seeds(seeds: range) -> None:
    if seeds.start < 0:
        raise ValueError(f"training seeds must be >= 0, got {seeds.start}")
    if seeds.stop > HELD_OUT_SEED_BASE:
        raise ValueError(f"training seeds {seeds.start}..{seeds.stop - 1} reach the held-out evaluation seeds "
                         f"(>= {HELD_OUT_SEED_BASE}); lower --seed or --steps/--batch-size")


def augmentation_rng(seed: int) -> np.random.Generator:
    """Augmentation randomness of one sample: its own stream, independent of the renderer's use of
    ``seed`` and of which worker renders it."""
    return np.random.default_rng([seed, 0x5E6])


# --- datasets ---------------------------------------------------------------------------------

SceneRenderer = Callable[[int, int, int], Any]    # render_scene(seed, height, width) -> Scene
PoseRenderer = Callable[..., Any]                 # render_pose_sample(seed, out_hw=(h, w)) -> PoseSample
HeatmapEncoder = Callable[..., tuple[Any, Any]]   # gaussian_heatmaps(keypoints, out_hw, stride, sigma)


def _render_scene(seed: int, height: int, width: int) -> Any:
    from .data.scenes import render_scene  # imported late: keeps this module light for workers
    return render_scene(seed, height, width)


def _render_pose(seed: int, out_hw: tuple[int, int]) -> Any:
    from .data.pose import render_pose_sample
    return render_pose_sample(seed, out_hw=out_hw)


def _encode_heatmaps(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int, sigma: float) -> tuple[Any, Any]:
    from ..inference.keypoints import gaussian_heatmaps
    return gaussian_heatmaps(keypoints, out_hw, stride=stride, sigma=sigma)


def random_crop(image: np.ndarray, labels: np.ndarray, size: tuple[int, int],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A size[0] x size[1] window at a random place; a too small image is padded first
    (image with 0, labels with the ignore index, so padding costs no loss)."""
    ch, cw = size
    h, w = labels.shape
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        labels = np.pad(labels, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    y = int(rng.integers(0, image.shape[0] - ch + 1))
    x = int(rng.integers(0, image.shape[1] - cw + 1))
    return image[y:y + ch, x:x + cw], labels[y:y + ch, x:x + cw]


def flip_keypoints(keypoints: np.ndarray, width: int,
                   flip_pairs: Sequence[Sequence[int]] = COCO_FLIP_PAIRS) -> np.ndarray:
    """Keypoints [K, 3] (x, y, v) of an image mirrored left-right: x -> width - 1 - x (pixel
    centres), and left/right joints swap places so index k still names the same joint."""
    out = keypoints.copy()
    out[:, 0] = width - 1 - out[:, 0]
    for a, b in flip_pairs:
        out[[a, b]] = out[[b, a]]
    return out


def _tensors(**arrays: Any) -> Batch:
    """numpy (possibly negatively strided after a flip) -> contiguous tensors."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


class SegDataset(Dataset):
    """Scale-augmented street-scene crops: {"image": uint8 [h, w, 3], "labels": uint8 [h, w]}.

    Each sample renders its scene at a random height in ``scale_range`` (width twice that, the
    Cityscapes aspect), takes a random ``crop`` and flips it half of the time.
    """

    def __init__(self, seeds: Sequence[int], crop: tuple[int, int] = (384, 384),
                 scale_range: tuple[int, int] = (512, 1024), flip: bool = True,
                 render: SceneRenderer | None = None) -> None:
        self.seeds, self.crop, self.scale_range, self.flip = seeds, tuple(crop), tuple(scale_range), flip
        self.render = render or _render_scene

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> Batch:
        seed = int(self.seeds[index])
        rng = augmentation_rng(seed)
        height = int(rng.integers(self.scale_range[0], self.scale_range[1] + 1))
        scene = self.render(seed, height, 2 * height)
        image, labels = random_crop(scene.image, scene.labels, self.crop, rng)
        if self.flip and rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return _tensors(image=image, labels=labels)


class PoseDataset(Dataset):
    """Top-down person crops with heatmap targets:
    {"image": uint8 [h, w, 3], "heatmaps": float [K, h/4, w/4], "weights": float [K]}."""

    def __init__(self, seeds: Sequence[int], input_size: tuple[int, int] = (256, 192), flip: bool = True,
                 sigma: float = 2.0, render: PoseRenderer | None = None,
                 encode: HeatmapEncoder | None = None) -> None:
        self.seeds, self.input_size, self.flip, self.sigma = seeds, tuple(input_size), flip, sigma
        self.render = render or _render_pose
        self.encode = encode or _encode_heatmaps

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> Batch:
        seed = int(self.seeds[index])
        sample = self.render(seed, out_hw=self.input_size)
        image, keypoints = sample.image, np.asarray(sample.keypoints, dtype=np.float32)
        if self.flip and augmentation_rng(seed).random() < 0.5:
            image, keypoints = image[:, ::-1], flip_keypoints(keypoints, image.shape[1])
        heatmaps, weights = self.encode(keypoints, self.input_size, stride=STRIDE, sigma=self.sigma)
        return {**_tensors(image=image), "heatmaps": torch.as_tensor(heatmaps, dtype=torch.float32),
                "weights": torch.as_tensor(weights, dtype=torch.float32)}


DatasetFactory = Callable[[TrainConfig, Sequence[int]], Dataset]


def make_dataset(config: TrainConfig, seeds: Sequence[int]) -> Dataset:
    """The task's training dataset over ``seeds`` with the real renderers."""
    if config.task == "seg":
        return SegDataset(seeds, config.crop, config.scale_range)
    return PoseDataset(seeds, config.input_size)


def _init_worker(_: int) -> None:
    # rendering is single-threaded numpy/OpenCV; torch threads in workers would fight the training step
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, config: TrainConfig) -> DataLoader:
    """In-order batches, rendered ``config.workers`` processes ahead of the training step.
    Its own generator: creating the loader must not consume the global RNG (exact resume)."""
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.workers,
                      pin_memory=torch.device(config.device).type == "cuda", worker_init_fn=_init_worker,
                      generator=torch.Generator().manual_seed(0), prefetch_factor=2 if config.workers else None)


# --- model, optimisation, loss ----------------------------------------------------------------

def task_meta(config: TrainConfig) -> dict[str, Any]:
    """Vocabulary metadata carried by the saved model (only where it names every output)."""
    if config.task == "seg":
        if config.outputs != len(CITYSCAPES_CLASSES):
            return {}
        return {"classes": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in CITYSCAPES_PALETTE]}
    meta: dict[str, Any] = {"input_size": list(config.input_size)}
    if config.outputs == len(COCO_KEYPOINTS):
        meta |= {"keypoints": list(COCO_KEYPOINTS), "skeleton": [list(e) for e in COCO_SKELETON],
                 "flip_pairs": [list(p) for p in COCO_FLIP_PAIRS]}
    return meta


def build_training_model(config: TrainConfig) -> SegFormerPP:
    """Model of the configuration, merge preset active, train mode: random (seeded by
    ``config.seed``) or, with ``config.init``, starting from that checkpoint's weights."""
    torch.manual_seed(config.seed)
    model = build_model(config.variant, config.task, num_classes=config.outputs, num_keypoints=config.outputs,
                        head=config.head, meta=task_meta(config), drop_path_rate=config.drop_path,
                        merge=config.merge)
    if config.init:
        # load_model checks the file against the run: same variant, task and number of outputs
        source = load_model(config.init, variant=config.variant, task=config.task, num_classes=config.outputs)
        model.load_state_dict(source.state_dict())
    return model.to(config.device).train()


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; norms and biases (every parameter with fewer than 2 dims) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))


def lr_factor(step: int, total: int, warmup: int, power: float = 1.0) -> float:
    """Multiplier of the base lr for update ``step`` (0-based): linear warm-up to 1 over ``warmup``
    updates, times poly decay (1 - step/total)^power, which reaches 0 at ``total``."""
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return warm * max(0.0, 1.0 - step / total) ** power


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    # a plain function, not a callable object: LambdaLR then keeps no state of it in state_dict
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))


def seg_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the non-ignored pixels, logits upsampled bilinearly to the label size."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    labels = labels.long()
    # sum / count instead of 'mean': an all-ignore batch gives 0, not NaN
    valid = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum") / valid


def pose_loss(heatmaps: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """MSRA / mmpose heatmap MSE: per-keypoint weights (0 for keypoints without a target)."""
    w = weights[:, :, None, None]
    return F.mse_loss(heatmaps * w, target * w)


def batch_loss(model: SegFormerPP, batch: Batch, device: torch.device) -> Tensor:
    out = model(to_tensor(batch["image"], device))
    if model.task == "seg":
        return seg_loss(out, batch["labels"].to(device, non_blocking=True))
    return pose_loss(out, batch["heatmaps"].to(device, non_blocking=True), batch["weights"].to(device, non_blocking=True))


@dataclass
class Trainee:
    """A model with its optimiser and schedule: what one training step updates."""

    model: SegFormerPP
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    grad_clip: float = 0.0

    @classmethod
    def create(cls, model: SegFormerPP, config: TrainConfig) -> "Trainee":
        optimizer = make_optimizer(model, config.lr, config.weight_decay)
        return cls(model, optimizer, make_scheduler(optimizer, config.steps, config.warmup_steps), config.grad_clip)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, batch: Batch) -> float:
        """One update; returns the batch loss before it."""
        device = next(self.model.parameters()).device
        # gradients go before the forward pass, so they never coexist with its activations
        self.optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(self.model, batch, device)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at lr {self.lr:.3g}; lower --lr or set --grad-clip")
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return value


def timed_step(trainee: Trainee, batch: Batch) -> tuple[float, float]:
    """(loss, seconds) of one update, the device's queue drained."""
    device = next(trainee.model.parameters()).device
    loss, ms = timed(lambda: trainee.step(batch), device)
    return loss, ms / 1000


def measured_step(trainee: Trainee, batch: Batch) -> tuple[float, float | None]:
    """(loss, peak MB above the state before it) of one update, under the memory profiler."""
    losses: list[float] = []
    peak = peak_memory_mb(lambda: losses.append(trainee.step(batch)), next(trainee.model.parameters()).device)
    return losses[0], peak


# --- checkpoints --------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every global RNG as plain tensors and numbers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, trainee: Trainee, step: int, config: TrainConfig, losses: Sequence[float]) -> None:
    """last.pt: plain dicts and tensors only; written aside and renamed, so a crash keeps the old one."""
    state = {"format": CHECKPOINT_FORMAT, "step": step, "config": config.to_dict(),
             "model": trainee.model.state_dict(), "optimizer": trainee.optimizer.state_dict(),
             "scheduler": trainee.scheduler.state_dict(), "rng": rng_state(), "losses": list(losses)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a segpp-train checkpoint")
    return state


def load_resume_config(out: str | os.PathLike) -> TrainConfig:
    """The configuration a checkpointed run was started with."""
    return TrainConfig.from_dict(load_checkpoint(Path(out) / LAST_CHECKPOINT)["config"])


def restore(trainee: Trainee, state: Mapping[str, Any]) -> None:
    trainee.model.load_state_dict(state["model"])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])


def git_commit() -> str | None:
    """The source commit ('-dirty' when the tree has changes), None outside a git checkout."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], capture_output=True,
                              text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def save_final_model(model: SegFormerPP, config: TrainConfig, final_loss: float | None) -> Path:
    """model.safetensors with the task vocabulary and how it was trained in its metadata."""
    model.meta["training"] = {
        "seed": config.seed, "steps": config.steps, "batch_size": config.batch_size,
        "commit": config.commit or git_commit(),
        "command": config.command or shlex.join(sys.argv), "merge": config.merge, "final_loss": final_loss,
    }
    return save_model(model, Path(config.out) / FINAL_MODEL, fp16=config.fp16)


# --- the loop -----------------------------------------------------------------------------------

@dataclass
class TrainResult:
    model: SegFormerPP
    step: int                                               # completed updates, over all resumptions
    losses: list[float] = field(default_factory=list)       # of the updates this call ran
    step_times: list[float] = field(default_factory=list)   # seconds, without the profiled step
    data_waits: list[float] = field(default_factory=list)   # seconds spent waiting for a batch
    peak_mb: float | None = None
    final_loss: float | None = None
    checkpoint: Path | None = None
    model_path: Path | None = None

    def summary(self) -> str:
        median = statistics.median(self.step_times) if self.step_times else math.nan
        wait = statistics.median(self.data_waits) if self.data_waits else math.nan
        peak = "n/a" if self.peak_mb is None else f"{self.peak_mb:.0f} MB"
        loss = "n/a" if self.final_loss is None else f"{self.final_loss:.4f}"
        return (f"step {self.step}: median step time {median:.3f} s (median data wait {wait:.3f} s), "
                f"peak memory of one step {peak}, final loss {loss} (mean of the last {LOSS_WINDOW} steps)")


def _prepare(config: TrainConfig, resume: bool) -> tuple[Trainee, int, deque[float]]:
    """The model, optimiser and schedule at the start of this call: fresh or from last.pt."""
    trainee = Trainee.create(build_training_model(config), config)
    recent: deque[float] = deque(maxlen=LOSS_WINDOW)
    last = Path(config.out) / LAST_CHECKPOINT if config.out else None
    if not resume:
        if last is not None and last.exists():
            raise FileExistsError(f"{last} exists; pass --resume to continue that run or choose another --out")
        return trainee, 0, recent
    if last is None:
        raise ValueError("resuming needs the run's output directory (--out)")
    state = load_checkpoint(last)
    changes = defining_changes(TrainConfig.from_dict(state["config"]), config)
    if changes:
        raise ValueError("cannot resume with a different training definition: " + "; ".join(changes))
    restore(trainee, state)
    recent.extend(state["losses"])
    return trainee, int(state["step"]), recent


def _log_line(step: int, total: int, losses: Sequence[float], times: Sequence[float], lr: float) -> str:
    loss = statistics.fmean(losses) if losses else math.nan
    seconds = statistics.median(times) if times else math.nan
    return f"step {step}/{total}  loss {loss:.4f}  lr {lr:.3g}  step {seconds:.3f} s"


def train(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
          dataset_factory: DatasetFactory = make_dataset, progress: bool = True,
          measure_memory: bool = True) -> TrainResult:
    """Train (or continue) the configured run.

    Writes ``out/last.pt`` every ``ckpt_every`` updates and when this call ends, and
    ``out/model.safetensors`` once all ``steps`` are done. ``stop_after`` ends this call after
    that many updates in total (the schedule still spans ``steps``), for time-sliced jobs.
    The second update of the call runs under the memory profiler (``measure_memory``) and is
    left out of the step times.
    """
    config.validate()
    trainee, start, recent = _prepare(config, resume)
    end = config.steps if stop_after is None else max(start, min(stop_after, config.steps))
    result = TrainResult(trainee.model, start)
    if config.out:
        Path(config.out).mkdir(parents=True, exist_ok=True)
    seeds = training_seeds(config)[start * config.batch_size:end * config.batch_size]
    # no loader when nothing is left: its workers would start for nothing
    batches = iter(make_loader(dataset_factory(config, seeds), config)) if seeds else iter(())
    bar = tqdm(total=config.steps, initial=start, disable=not progress, dynamic_ncols=True,
               desc=f"{config.task} {get_spec(config.variant).name}")
    for step in range(start, end):
        waited = time.perf_counter()
        batch = next(batches)
        result.data_waits.append(time.perf_counter() - waited)
        lr = trainee.lr
        if measure_memory and step == start + min(1, end - start - 1):
            loss, result.peak_mb = measured_step(trainee, batch)
        else:
            loss, seconds = timed_step(trainee, batch)
            result.step_times.append(seconds)
        result.losses.append(loss)
        recent.append(loss)
        result.step = step + 1
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", step_s=f"{result.step_times[-1]:.2f}"
                        if result.step_times else "-")
        bar.update()
        if result.step % config.log_every == 0:
            bar.write(_log_line(result.step, config.steps, result.losses[-config.log_every:],
                                result.step_times[-config.log_every:], lr))
        if config.out and (result.step % config.ckpt_every == 0 or result.step == end):
            result.checkpoint = Path(config.out) / LAST_CHECKPOINT
            save_checkpoint(result.checkpoint, trainee, result.step, config, recent)
    bar.close()
    result.final_loss = statistics.fmean(recent) if recent else None
    if config.out and result.step == config.steps:
        result.model_path = save_final_model(trainee.model, config, result.final_loss)
    return result


# --- training speed and memory per merge preset ------------------------------------------------

@dataclass
class PresetRow:
    preset: str
    median_s: float
    speedup: float
    peak_mb: float | None
    loss: float          # of the last timed update: same data and start, so the presets compare


def measure_training_presets(config: TrainConfig, presets: Sequence[str] = ("none", "hq", "fast", "2x2"),
                             steps: int = 5, warmup: int = 1,
                             dataset_factory: DatasetFactory = make_dataset) -> list[PresetRow]:
    """Step time and peak memory of training under each merge preset.

    Every preset starts from the same weights and optimiser state and sees the same
    pre-rendered batches; the presets take turns within each step (the order rotates), so
    drift of a shared machine hits every row alike. Speed-up is against ``none`` of this run.
    """
    unknown = [p for p in presets if p not in PRESETS]
    if unknown or not presets:
        raise ValueError(f"unknown merge preset(s) {unknown}; use some of {', '.join(PRESETS)}")
    config = replace(config, steps=max(config.steps, steps + warmup + 1))
    config.validate()
    seeds = training_seeds(config)[:(warmup + steps) * config.batch_size]
    batches = list(make_loader(dataset_factory(config, seeds), config))
    base = build_training_model(config)
    trainees = {p: Trainee.create(copy.deepcopy(base), config) for p in presets}
    for preset, trainee in trainees.items():
        trainee.model.set_merge(preset)
    times: dict[str, list[float]] = {p: [] for p in presets}
    losses: dict[str, float] = {}
    for i, batch in enumerate(batches):
        for preset in rotated(presets, i):
            losses[preset], seconds = timed_step(trainees[preset], batch)
            if i >= warmup:
                times[preset].append(seconds)
    peaks = {p: measured_step(trainees[p], batches[-1])[1] for p in presets}
    reference = statistics.median(times["none"]) if "none" in times else math.nan
    return [PresetRow(p, statistics.median(times[p]), reference / statistics.median(times[p]), peaks[p], losses[p])
            for p in presets]


def format_preset_table(rows: Sequence[PresetRow]) -> str:
    return markdown_table(("preset", "median step s", "speed-up", "peak MB", "loss"),
                          ([r.preset, f"{r.median_s:.3f}", f"{r.speedup:.2f}x",
                            "n/a" if r.peak_mb is None else f"{r.peak_mb:.0f}", f"{r.loss:.4f}"] for r in rows))

