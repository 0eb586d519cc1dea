"""Label conventions of the synthetic data: train IDs by class name, the ignored label."""
from __future__ import annotations

from ...inference.vocab import CITYSCAPES_CLASSES

IGNORE_INDEX = 255  # pixels no class is scored on (Cityscapes' convention)
TRAIN_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}
