"""Scoring what a latency budget chose: which preset made a label, and what that cost in mIoU.

For held-out scenes, the labels of every ladder preset are computed once in this process (the
same inference core as the node, labels at input resolution). A label the node published is
then identified exactly: the preset whose labels it matches. Its confusion against the ground
truth is the one of that (scene, preset), and a fixed preset's confusion over the same labels
is the one of (scene, that preset): budget mode and fixed presets are scored on the same scene
sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..inference import Segmenter
from .data.scenes import Scene
from .metrics import confusion_matrix, mean_iou

UNKNOWN = "?"


@dataclass
class BudgetScore:
    """Confusion of the budget's choices and of each fixed preset over the same labels."""

    chosen: dict[str, np.ndarray] = field(default_factory=dict)        # per group (e.g. 'idle', 'loaded')
    fixed: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def miou(self, group: str | None = None) -> tuple[float, dict[str, float]]:
        """(budget mode mIoU, {preset: mIoU}) over one group, or all of them."""
        groups = [group] if group else list(self.chosen)
        chosen = sum(self.chosen[g] for g in groups)
        presets = {p for g in groups for p in self.fixed[g]}
        return mean_iou(chosen), {p: mean_iou(sum(self.fixed[g][p] for g in groups)) for p in sorted(presets)}


class PresetReferences:
    """Reference labels and confusions of every (scene, preset)."""

    def __init__(self, scenes: Sequence[Scene], presets: Sequence[str], max_side: int) -> None:
        segmenter = Segmenter(None, device="cpu", max_side=max_side)
        n = segmenter.model.num_outputs
        self.presets = list(presets)
        self.labels: list[dict[str, np.ndarray]] = []
        self.confusion: list[dict[str, np.ndarray]] = []
        for scene in scenes:
            by_preset, conf = {}, {}
            for preset in self.presets:
                segmenter.set_merge(preset)
                by_preset[preset] = segmenter(scene.image).labels
                conf[preset] = confusion_matrix(by_preset[preset], scene.labels, n)
            self.labels.append(by_preset)
            self.confusion.append(conf)
        self.score = BudgetScore()
        self.agreement: list[float] = []   # of each identified label with its preset's reference

    def identify(self, scene: int, labels: np.ndarray, group: str) -> str:
        """The preset that made ``labels`` of ``scene`` (the closest reference; UNKNOWN when none
        agrees on 99% of the pixels); scores it under ``group``."""
        agree = {p: float((ref == labels).mean()) if ref.shape == labels.shape else 0.0
                 for p, ref in self.labels[scene].items()}
        preset = max(agree, key=agree.get)
        if agree[preset] < 0.99:
            return UNKNOWN
        self.agreement.append(agree[preset])
        score = self.score
        score.chosen[group] = score.chosen.get(group, 0) + self.confusion[scene][preset]
        fixed = score.fixed.setdefault(group, {})
        for p in self.presets:
            fixed[p] = fixed.get(p, 0) + self.confusion[scene][p]
        return preset
