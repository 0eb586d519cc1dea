"""segpp-fidelity on tiny models: one row per preset, 'none' as the reference, JSON output."""
from __future__ import annotations

import json

from segpp_ros.cli import fidelity
from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, COCO_KEYPOINTS
from segpp_ros.model import build_model, save_model

from .conftest import TINY


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
    for r in rows:
        assert 0.0 <= r["value"] <= 100.0
        if r["preset"] == "none":
            assert r["delta"] == 0.0 and r["speedup"] == 1.0
    assert rows[2]["metric"] == "PCK@0.1" and rows[2]["extra"] is not None
    assert "| seg | 64x128 | 2x2 | mIoU |" in capsys.readouterr().out


def test_unknown_preset_is_rejected(capsys) -> None:
    assert fidelity.main(["--presets", "none,warp"]) == 2
    assert "--presets" in capsys.readouterr().err
