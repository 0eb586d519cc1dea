"""segpp-fidelity on tiny models: one row per preset, 'none' as the reference, JSON output."""
from __future__ import annotations

import json

from segpp_ros.cli import fidelity
from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, COCO_KEYPOINTS
from segpp_ros.model import build_model, save_model

from .conftest import TINY


def independent_miou(weights, preset: str, scenes: int, size: tuple[int, int]) -> float:
    """mIoU in percent over the classes present in the ground truth (255 ignored), counted pixel
    by pixel here rather than with segpp_ros.training.metrics."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from segpp_ros.inference.preprocess import to_tensor
    from segpp_ros.model import load_model
    from segpp_ros.training.data.scenes import render_scene
    from segpp_ros.training.train import HELD_OUT_SEED_BASE

    model = load_model(weights).eval()
    model.set_merge(preset)
    inter, union, present = {}, {}, set()
    for seed in range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + scenes):
        scene = render_scene(seed, *size)
        with torch.inference_mode():
            logits = model(to_tensor(scene.image))
        pred = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)[0].numpy()
        valid = scene.labels != 255
        for c in range(19):
            p, t = (pred == c) & valid, (scene.labels == c) & valid
            inter[c] = inter.get(c, 0) + int((p & t).sum())
            union[c] = union.get(c, 0) + int((p | t).sum())
            if t.any():
                present.add(c)
    return 100.0 * float(np.mean([inter[c] / union[c] for c in sorted(present)]))


def test_segmentation_and_pose_rows(tmp_path, capsys) -> None:
    seg = tmp_path / "seg.safetensors"
    pose = tmp_path / "pose.safetensors"
    save_model(build_model(TINY, num_classes=19, meta={"classes": list(CITYSCAPES_CLASSES)}).eval(), seg)
    save_model(build_model(TINY, task="pose", num_keypoints=17,
                           meta={"keypoints": list(COCO_KEYPOINTS), "input_size": [64, 48]}).eval(), pose)
    out = tmp_path / "fid.json"
    code = fidelity.main(["--seg-weights", str(seg), "--pose-weights", str(pose), "--sizes", "64x128",
                          "--scenes", "2", "--pose-samples", "4", "--pose-batch", "2", "--presets", "none,2x2",
                          "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["task"], r["preset"]) for r in rows] == [("seg", "none"), ("seg", "2x2"), ("pose", "none"),
                                                       ("pose", "2x2")]
    # each segmentation row against mIoU computed here, by definition, from the same model on
    # the same held-out scenes; deltas and speed-ups against the reference row's figures
    for r in rows[:2]:
        assert abs(r["value"] - independent_miou(seg, r["preset"], 2, (64, 128))) <= 0.006, r
    for base, row in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert abs(row["delta"] - (row["value"] - base["value"])) <= 0.006, row
        assert abs(row["speedup"] - base["median_ms"] / row["median_ms"]) <= 0.002 * row["speedup"] + 1e-3, row
        assert base["delta"] == 0.0 and base["speedup"] == 1.0
    assert rows[2]["metric"] == "PCK@0.1" and rows[2]["extra"] is not None
    assert "| seg | 64x128 | 2x2 | mIoU |" in capsys.readouterr().out


def test_unknown_preset_is_rejected(capsys) -> None:
    assert fidelity.main(["--presets", "none,warp"]) == 2
    assert "--presets" in capsys.readouterr().err
