"""segpp-posebench on a tiny pose model: arguments, one round, both tables, JSON rows."""
from __future__ import annotations

import json

import pytest
import torch

from segpp_ros.cli import posebench
from segpp_ros.inference.vocab import COCO_FLIP_PAIRS
from segpp_ros.model import build_model, save_model
from segpp_ros.training import posebench as study

from .conftest import TINY


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_defaults_are_the_readme_configuration() -> None:
    args = posebench.parse_args([])
    assert args.input_size == (384, 288) and args.frame == (720, 1280) and args.persons == [1, 4, 8]
    assert args.presets == ["none", "hq", "fast", "2x2", "downsample"] and args.threads == 2
    assert args.weights is None and not args.flip_test


def test_frame_boxes_repeat_the_scene_persons() -> None:
    image, boxes = study.frame_boxes(0, 96, 160, 5)
    assert image.shape == (96, 160, 3) and len(boxes) == 5
    assert [b.instance_id for b in boxes] == list(range(5))


def test_one_round_writes_tables_and_json(tmp_path, capsys) -> None:
    weights = tmp_path / "pose.safetensors"
    save_model(build_model(TINY, task="pose", meta={"flip_pairs": [list(p) for p in COCO_FLIP_PAIRS]}).eval(),
               weights)
    out = tmp_path / "pose.json"
    code = posebench.main(["--weights", str(weights), "--input-size", "64x48", "--frame", "96x160",
                           "--persons", "1,3", "--presets", "none,2x2", "--threads", "1", "--warmup", "0",
                           "--iters", "1", "--flip-test", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["preset"], r["persons"], r["mode"]) for r in rows] == [
        (p, n, m) for p in ("none", "2x2") for n in (1, 3) for m in ("batched", "sequential")]
    med = {(r["preset"], r["persons"], r["mode"]): r["median_ms"] for r in rows}
    for r in rows:
        assert r["median_ms"] > 0 and r["network_ms"] > 0
        key = (r["persons"], r["mode"])
        # each speed-up against the medians it is defined by (batched over sequential at the same
        # preset and persons; a preset over none at the same persons and mode)
        assert r["speedup"] == pytest.approx(med[r["preset"], r["persons"], "sequential"] / r["median_ms"], rel=1e-2)
        assert r["preset_speedup"] == pytest.approx(med[("none", *key)] / r["median_ms"], rel=1e-2)
    assert data["environment"]["threads"] == 1 and data["environment"]["flip_test"]
    text = capsys.readouterr().out
    assert "| persons (none) | batched ms | sequential ms | batched speed-up |" in text
    assert "| preset (batched) | 1 person ms | speed-up vs none | 3 persons ms | speed-up vs none |" in text
    assert "| 2x2 |" in text


@pytest.mark.parametrize("argv,message", [(["--presets", "none,warp"], "unknown preset"),
                                          (["--iters", "0"], "--iters")])
def test_bad_arguments_exit_2(argv, message, capsys) -> None:
    assert posebench.main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_sizes_and_counts_are_argparse_errors() -> None:
    for argv in (["--persons", "0"], ["--persons", "a,b"], ["--input-size", "10x10"]):
        with pytest.raises(SystemExit):
            posebench.parse_args(argv)


def test_a_segmentation_checkpoint_is_refused(tmp_path, capsys) -> None:
    weights = tmp_path / "seg.safetensors"
    save_model(build_model(TINY, num_classes=19).eval(), weights)
    assert posebench.main(["--weights", str(weights), "--threads", "1"]) == 2
    assert "'pose' was requested" in capsys.readouterr().err
