"""Person crops of synthetic scenes with their keypoints, for pose training and evaluation.

The crop geometry is the inference core's (segpp_ros.inference.crops), so training crops and
the node's crops are the same warp.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...inference.crops import box_to_affine, transform_points, warp_crop
from .scenes import Scene, render_scene

__all__ = ["PoseSample", "person_crops", "render_pose_sample"]


@dataclass
class PoseSample:
    """image [h, w, 3] uint8 RGB crop; keypoints [17, 3] float32 (x, y in crop px; v as in
    ``Person``, set to 0 where the joint falls outside the crop); affine [2, 3] image -> crop."""

    image: np.ndarray
    keypoints: np.ndarray
    affine: np.ndarray


def _crop(scene: Scene, box: np.ndarray, keypoints: np.ndarray, out_hw: tuple[int, int],
          padding: float) -> PoseSample:
    affine = box_to_affine(box, out_hw, padding)
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    kp[:, :2] = transform_points(keypoints[:, :2], affine)
    h, w = out_hw
    outside = (kp[:, 0] < -0.5) | (kp[:, 0] >= w - 0.5) | (kp[:, 1] < -0.5) | (kp[:, 1] >= h - 0.5)
    kp[outside, 2] = 0.0
    return PoseSample(image=warp_crop(scene.image, affine, out_hw), keypoints=kp, affine=affine)


def _usable(scene: Scene, min_visible: int, min_height_px: float) -> list[int]:
    return [i for i, p in enumerate(scene.persons)
            if int((p.keypoints[:, 2] == 2).sum()) >= min_visible and p.box[3] - p.box[1] >= min_height_px]


def person_crops(scene: Scene, out_hw: tuple[int, int] = (256, 192), padding: float = 1.25,
                 min_visible: int = 6, min_height_px: float = 48) -> list[PoseSample]:
    """One crop per person of the scene with >= min_visible visible (v == 2) joints and a box at
    least min_height_px tall, in the order of ``scene.persons``."""
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    return [_crop(scene, scene.persons[i].box, scene.persons[i].keypoints, out_hw, padding)
            for i in _usable(scene, min_visible, min_height_px)]


def render_pose_sample(seed: int, out_hw: tuple[int, int] = (256, 192), padding: float = 1.25,
                       min_visible: int = 6) -> PoseSample:
    """The crop of one person of the scene of ``seed``, deterministic; never fails.

    The scene is rendered at twice the crop height (2:1 street aspect), so persons (about 0.05
    to 0.6 image heights tall) span from a quarter of the crop to more than the crop: the pick is
    among persons at least a quarter of the crop tall with >= min_visible visible joints. A scene
    without such a person (rare) moves on to a seed derived from (seed, attempt).
    """
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    height = 2 * out_hw[0]
    for attempt in range(1000):
        scene_seed = int(seed) if attempt == 0 else \
            int(np.random.SeedSequence([int(seed), attempt]).generate_state(1, np.uint64)[0])
        scene = render_scene(scene_seed, height, 2 * height)
        usable = _usable(scene, min_visible, out_hw[0] / 4)
        if usable:
            pick = np.random.Generator(np.random.PCG64([int(seed), attempt, 0x9053])).integers(len(usable))
            person = scene.persons[usable[int(pick)]]
            return _crop(scene, person.box, person.keypoints, out_hw, padding)
    raise RuntimeError(f"no usable person in 1000 scenes derived from seed {seed}")   # not reached in practice
