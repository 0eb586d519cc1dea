"""The CUDA graph checks of tools/gpu-check: two models capturing and replaying on two threads,
a graph replayed after its index tables left the cache, the captures of a scripted minute, and
TF32 on against off. On a GPU they run the real captures; ``dry`` runs the same scripts on the
CPU at small sizes with GraphedForward driven by ``capture_emulated`` (its bookkeeping, keys,
padding and locking, not the CUDA driver).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..inference import PoseEstimator, Segmenter
from ..inference.graphs import GraphedForward, capture_emulated, capture_between_frames
from ..inference.pose import whole_frame_box
from ..model import PRESETS
from ..model import merge as merge_module
from .data.scenes import render_scene


def _graphed(model_owner: Any, dry: bool) -> None:
    """On the CPU (dry run): the owner's forward through emulated captures."""
    if dry:
        model = model_owner.model
        model_owner.forward = GraphedForward(model, key=lambda: model.merge, capture=capture_emulated,
                                             on_device=lambda x: True)


def _models(device: str, dry: bool, graphs: bool) -> tuple[Segmenter, PoseEstimator]:
    seg = Segmenter(None, device=device, precision="fp32", max_side=128 if dry else 512, cuda_graphs=graphs)
    pose = PoseEstimator(None, device=device, precision="fp32", cuda_graphs=graphs)
    if graphs:
        _graphed(seg, dry)
        _graphed(pose, dry)
    return seg, pose


@dataclass
class Script:
    """The frames of the two-thread run: per step the preset, the camera images and the persons."""

    presets: list[str]
    images: list[list[np.ndarray]]
    persons: list[int]


def script(frames: int, dry: bool, seed: int = 0) -> Script:
    """Presets change every 10 frames, cameras per take 1-3, persons 1-6 (random, fixed seed)."""
    rng = np.random.default_rng(seed)
    h, w = (96, 128) if dry else (480, 640)
    scenes = [render_scene(10_000_500 + i, h, w).image for i in range(4)]
    presets = list(PRESETS)
    return Script([presets[(i // 10) % len(presets)] for i in range(frames)],
                  [[scenes[(i + k) % len(scenes)] for k in range(int(rng.integers(1, 4)))] for i in range(frames)],
                  [int(rng.integers(1, 7)) for _ in range(frames)])


def _boxes(image: np.ndarray, persons: int) -> list:
    h, w = image.shape[:2]
    box = whole_frame_box(h, w)
    return [box] * persons


def _run_seg(seg: Segmenter, s: Script, out: list, errors: list) -> None:
    try:
        for preset, images in zip(s.presets, s.images):
            seg.set_merge(preset)
            out.append([r.labels for r in seg.batch(images)])
            capture_between_frames(seg.forward)
    except Exception as err:  # noqa: BLE001 -- reported, the check fails
        errors.append(f"segmentation: {type(err).__name__}: {err}")


def _run_pose(pose: PoseEstimator, s: Script, out: list, errors: list) -> None:
    try:
        for preset, images, persons in zip(s.presets, s.images, s.persons):
            pose.set_merge(preset)
            out.append(np.stack([p.keypoints for p in pose(images[0], _boxes(images[0], persons)).persons]))
            capture_between_frames(pose.forward)
    except Exception as err:  # noqa: BLE001 -- reported, the check fails
        errors.append(f"pose: {type(err).__name__}: {err}")


def concurrency(device: str, dry: bool) -> dict:
    """Segmentation and pose on two threads, capturing and replaying while presets, camera
    counts and person counts change, against the same script run single-threaded and eagerly:
    errors, eager fallbacks, captures, labels equal, keypoint differences."""
    s = script(30 if dry else 300, dry)
    seg, pose = _models(device, dry, graphs=True)
    for model in (seg, pose):
        model.defer_capture = True
    labels: list = []
    keypoints: list = []
    errors: list[str] = []
    start = time.perf_counter()
    threads = [threading.Thread(target=_run_seg, args=(seg, s, labels, errors)),
               threading.Thread(target=_run_pose, args=(pose, s, keypoints, errors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ref_seg, ref_pose = _models(device, dry, graphs=False)
    ref_labels: list = []
    ref_keypoints: list = []
    _run_seg(ref_seg, s, ref_labels, errors)
    _run_pose(ref_pose, s, ref_keypoints, errors)
    # the reference runs unpadded batches: kernels chosen per batch size may round a near-tie
    # the other way, so agreement, not identity
    agreement = float(np.mean([np.mean(a == b) for x, y in zip(labels, ref_labels) for a, b in zip(x, y)]))
    shift = max((float(np.abs(a[..., :2] - b[..., :2]).max()) for a, b in zip(keypoints, ref_keypoints)), default=0.0)
    failures = {name: sum(len(v) for v in m.forward.failures.values()) for name, m in (("seg", seg), ("pose", pose))}
    return {"frames": len(s.presets), "seconds": round(seconds, 1), "errors": errors, "capture_failures": failures,
            "captures": {"seg": seg.forward.captures, "pose": pose.forward.captures},
            "label_agreement_percent": round(100 * agreement, 4), "keypoint_max_shift_px": round(shift, 4),
            "ok": (not errors and not any(failures.values()) and len(labels) == len(ref_labels) == len(s.presets)
                   and agreement >= 0.9999 and shift <= 0.05)}


def ownership(device: str, dry: bool) -> dict:
    """A graph captured at one size, then enough other sizes (and a cleared cache) to evict its
    index tables, new allocations on top; its replay must still equal the eager pass."""
    seg, _ = _models(device, dry, graphs=True)
    seg.set_merge("hq")
    image = render_scene(10_000_777, *((96, 128) if dry else (480, 640))).image
    first = seg(image).labels                      # cold, captured after the call
    others = [(64 + 16 * i, 96 + 16 * i) for i in range(merge_module.INDEX_CACHE_SIZE // 4 + 2)]
    for h, w in others:
        seg(render_scene(10_000_778, h, w).image)
    merge_module._bipartite_partition.cache_clear()
    merge_module._cell_slots.cache_clear()
    junk = [torch.randint(0, 2**30, (4096,), device=seg.device) for _ in range(64)]   # reuse freed memory
    replayed = seg(image).labels
    eager = Segmenter(None, device=device, precision="fp32", max_side=seg.max_side, cuda_graphs=False)
    eager.set_merge("hq")
    del junk
    return {"sizes_after": len(others), "captures": seg.forward.captures,
            "equal_to_eager": bool(np.array_equal(replayed, eager(image).labels)),
            "equal_to_first": bool(np.array_equal(replayed, first)),
            "ok": bool(np.array_equal(replayed, first))}


def capture_count(device: str, dry: bool) -> dict:
    """A scripted minute (a few seconds dry): frames with 1-4 cameras, 0-8 persons and three
    presets in turn through both models; graphs captured against distinct raw shapes met."""
    seg, pose = _models(device, dry, graphs=True)
    s = script(10_000, dry, seed=1)
    seconds = 5.0 if dry else 60.0
    shapes: set = set()
    start, i = time.perf_counter(), 0
    while time.perf_counter() - start < seconds and i < len(s.presets):
        preset = ("none", "hq", "fast")[(i // 20) % 3]
        seg.set_merge(preset)
        pose.set_merge(preset)
        images = s.images[i] + s.images[i][:1] * (i % 2)          # 1-4 cameras
        seg.batch(images)
        persons = i % 9
        if persons:
            pose(images[0], _boxes(images[0], persons))
        shapes.add(("seg", len(images), preset))
        shapes.add(("pose", persons, preset))
        i += 1
    captures = seg.forward.captures + pose.forward.captures
    kept = seg.forward.captured + pose.forward.captured
    return {"seconds": round(time.perf_counter() - start, 1), "frames": i, "distinct_batches_met": len(shapes),
            "captures": captures, "graphs_kept": kept, "ok": 0 < captures == kept}


def tf32(device: str, dry: bool) -> dict:
    """Labels with TF32 on in convolutions (cuDNN) or matmuls, against none, per preset (fp32).
    What decides whether TF32 can come back anywhere (inference.loader.tune_backend)."""
    if not device.startswith("cuda"):
        return {"skipped": "TF32 is a CUDA notion"}
    image = render_scene(10_000_321, 512, 1024).image
    seg = Segmenter(None, device=device, precision="fp32", cuda_graphs=False)
    out = {}
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        for preset in PRESETS:
            seg.set_merge(preset)
            results = {}
            for name, conv, matmul in (("off", False, False), ("conv", True, False), ("matmul", False, True)):
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
                results[name] = seg(image).labels
            out[preset] = {name: round(float((results[name] == results["off"]).mean()) * 100, 4)
                           for name in ("conv", "matmul")}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    return out
