"""Training library and segpp-train on a tiny model with tiny fake renderers (same signatures as
segpp_ros.training.data.scenes / segpp_ros.training.data.pose / segpp_ros.inference.keypoints, milliseconds per sample)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pytest
import torch

from segpp_ros.cli import train as cli
from segpp_ros.inference.preprocess import MEAN, STD, to_tensor
from segpp_ros.inference.vocab import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, COCO_FLIP_PAIRS, COCO_KEYPOINTS
from segpp_ros.model import load_model
from segpp_ros.training import train as T

from .conftest import TINY


@dataclass
class FakeScene:
    image: np.ndarray
    labels: np.ndarray


def fake_scene(seed: int, height: int, width: int) -> FakeScene:
    """Sky, buildings, road bands at seed-dependent heights; a strip of ignore at the bottom."""
    rng = np.random.default_rng(seed)
    a, b = sorted(int(v) for v in rng.integers(height // 5, 4 * height // 5, 2))
    labels = np.zeros((height, width), np.uint8)
    labels[:a], labels[a:b] = 10, 2
    labels[-2:] = 255
    image = np.array(CITYSCAPES_PALETTE + ((0, 0, 0),), np.uint8)[np.minimum(labels, 19)]
    return FakeScene(image, labels)


@dataclass
class FakePose:
    image: np.ndarray
    keypoints: np.ndarray


def fake_pose(seed: int, out_hw: tuple[int, int] = (64, 48)) -> FakePose:
    """Bright dots on a dark crop at the keypoints; two keypoints outside (v = 0)."""
    h, w = out_hw
    rng = np.random.default_rng(seed)
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = rng.uniform(4, w - 5, 17), rng.uniform(4, h - 5, 17), 2
    kp[15:, 2] = 0
    image = np.full((h, w, 3), 30, np.uint8)
    for x, y, _ in kp[:15]:
        image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 250
    return FakePose(image, kp)


def fake_heatmaps(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int = 4,
                  sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    h, w = math.ceil(out_hw[0] / stride), math.ceil(out_hw[1] / stride)
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = keypoints[:, 0, None, None] / stride, keypoints[:, 1, None, None] / stride
    heatmaps = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)).astype(np.float32)
    return heatmaps, (keypoints[:, 2] > 0).astype(np.float32)


def fake_dataset(config: T.TrainConfig, seeds: Sequence[int]) -> torch.utils.data.Dataset:
    if config.task == "seg":
        return T.SegDataset(seeds, config.crop, config.scale_range, render=fake_scene)
    return T.PoseDataset(seeds, config.input_size, render=fake_pose, encode=fake_heatmaps)


def tiny_config(tmp_path, task: str = "seg", **kw) -> T.TrainConfig:
    base = T.TrainConfig(task=task, variant=TINY, crop=(64, 64), scale_range=(48, 80), input_size=(64, 48),
                         steps=4, batch_size=2, lr=1e-3, warmup_steps=2, workers=0,
                         out=str(tmp_path / "run") if tmp_path else None, ckpt_every=2)
    return replace(base, **kw)


def run(config: T.TrainConfig, **kw) -> T.TrainResult:
    return T.train(config, dataset_factory=fake_dataset, progress=False, **kw)


# --- pieces ----------------------------------------------------------------------------------

def test_to_tensor_normalises_single_images_and_batches() -> None:
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = 255
    x = to_tensor(image)
    assert x.shape == (1, 3, 5, 7) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([(255 - MEAN[0]) / STD[0], -MEAN[1] / STD[1], -MEAN[2] / STD[2]]))
    assert to_tensor(torch.from_numpy(np.stack([image, image]))).shape == (2, 3, 5, 7)
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(image.astype(np.float32))


def test_warmup_then_poly_schedule() -> None:
    assert T.lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert T.lr_factor(4, 100, 10) == pytest.approx(0.5 * 0.96)
    assert T.lr_factor(9, 100, 10) == pytest.approx(0.91)
    assert T.lr_factor(50, 100, 10) == pytest.approx(0.5)
    assert T.lr_factor(100, 100, 10) == 0.0
    assert T.lr_factor(0, 100, 0) == 1.0
    # the optimiser sees the same values, update by update
    model = torch.nn.Linear(2, 2)
    opt = T.make_optimizer(model, 1.0, 0.01)
    sched = T.make_scheduler(opt, 100, 10)
    seen = []
    for _ in range(11):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([T.lr_factor(s, 100, 10) for s in range(11)])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]   # bias: no decay


def test_training_seeds_never_reach_the_held_out_set() -> None:
    ok = T.TrainConfig(seed=T.HELD_OUT_SEED_BASE - 20, steps=10, batch_size=2)
    ok.validate()
    assert T.training_seeds(ok)[-1] == T.HELD_OUT_SEED_BASE - 1
    with pytest.raises(ValueError, match="held-out"):
        replace(ok, steps=11).validate()
    with pytest.raises(ValueError, match="held-out"):
        run(replace(ok, steps=11, variant=TINY, out=None))


def test_seg_dataset_is_deterministic_cropped_padded_and_flipped() -> None:
    data = T.SegDataset(range(40), crop=(48, 96), scale_range=(40, 40), render=fake_scene)
    a, b = data[3], data[3]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["image"].shape == (48, 96, 3) and a["labels"].shape == (48, 96) and a["image"].dtype == torch.uint8
    assert (a["labels"][40:] == 255).all()                  # rendered only 40 rows: padded with ignore
    # fake scenes are left-right uniform except the crop placement: flip shows in the padding column
    flipped = [bool((data[i]["labels"][0, :16] == 255).all()) for i in range(40)]
    assert any(flipped) and not all(flipped)


def test_flip_keypoints_mirrors_x_and_swaps_left_right() -> None:
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = np.arange(17)
    kp[:, 2] = 2
    out = T.flip_keypoints(kp, width=100)
    assert out[0, 0] == 99                                  # nose stays nose
    for a, b in COCO_FLIP_PAIRS:
        assert out[a, 0] == 99 - b and out[b, 0] == 99 - a
    assert (out[:, 2] == 2).all()


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_a_few_steps_overfit_a_fixed_batch(task: str) -> None:
    config = tiny_config(None, task, drop_path=0.0, warmup_steps=0, lr=2e-3, steps=1000)
    batch = torch.utils.data.default_collate([fake_dataset(config, range(2))[i] for i in range(2)])
    trainee = T.Trainee.create(T.build_training_model(config), config)
    losses = [trainee.step(batch) for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


# --- the loop, checkpoints, final model --------------------------------------------------------

def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path) -> None:
    whole = run(tiny_config(tmp_path / "a"))
    first = run(tiny_config(tmp_path / "b"), stop_after=2)
    assert first.step == 2 and first.model_path is None
    state = torch.load(tmp_path / "b" / "run" / T.LAST_CHECKPOINT, weights_only=True)
    assert state["step"] == 2 and state["config"]["crop"] == [64, 64]
    rest = run(tiny_config(tmp_path / "b"), resume=True)
    assert rest.step == 4 and len(rest.losses) == 2
    assert rest.losses == whole.losses[2:]
    for (name, p), q in zip(whole.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_resume_with_workers_and_fp16_writes_the_same_final_model(tmp_path, task: str) -> None:
    """Worker processes render ahead and the final model is saved in fp16: a run stopped after 2
    of 4 updates and resumed (with another number of workers, a runtime setting) writes exactly
    the weights and final loss of the uninterrupted run. Drop path is on, so the restored random
    state matters."""
    from safetensors import safe_open

    settings = dict(workers=2, fp16=True, drop_path=0.2)
    whole = run(tiny_config(tmp_path / "a", task, **settings))
    run(tiny_config(tmp_path / "b", task, **settings), stop_after=2)
    rest = run(tiny_config(tmp_path / "b", task, **{**settings, "workers": 1}), resume=True)
    assert rest.losses == whole.losses[2:]
    files = [safe_open(str(result.model_path), "pt") for result in (whole, rest)]
    assert files[0].keys() == files[1].keys()
    for key in files[0].keys():
        a, b = (f.get_tensor(key) for f in files)
        assert (a.dtype == torch.float16) == a.is_floating_point() and torch.equal(a, b), key
    meta = [load_model(result.model_path).meta["training"] for result in (whole, rest)]
    assert meta[0]["final_loss"] == meta[1]["final_loss"]


def test_fresh_run_refuses_an_existing_run_and_resume_refuses_another_definition(tmp_path) -> None:
    config = tiny_config(tmp_path, steps=2)
    run(config, stop_after=1)
    with pytest.raises(FileExistsError, match="--resume"):
        run(config)
    with pytest.raises(ValueError, match="lr"):
        run(replace(config, lr=1.0), resume=True)
    assert run(replace(config, workers=1), resume=True).step == 2     # runtime settings may change


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_final_model_loads_with_its_vocabulary(tmp_path, task: str) -> None:
    result = run(tiny_config(tmp_path, task, steps=2, merge="2x2", fp16=True))
    model = load_model(result.model_path, task=task)
    assert model.spec.widths == TINY.widths
    training = model.meta["training"]
    assert training["steps"] == 2 and training["merge"] == "2x2" and training["seed"] == 0
    assert training["final_loss"] == pytest.approx(result.final_loss)
    if task == "seg":
        assert model.classes == list(CITYSCAPES_CLASSES) and len(model.palette) == 19
    else:
        assert model.keypoints == list(COCO_KEYPOINTS) and model.flip_pairs == [list(p) for p in COCO_FLIP_PAIRS]
        assert model.meta["input_size"] == [64, 48]
    assert result.peak_mb is None or result.peak_mb > 0
    assert len(result.step_times) == 1                      # the other step ran under the profiler


def test_report_presets_gives_one_row_per_preset() -> None:
    config = tiny_config(None, batch_size=1)
    rows = T.measure_training_presets(config, ["none", "hq", "2x2"], steps=1, warmup=0, dataset_factory=fake_dataset)
    assert [r.preset for r in rows] == ["none", "hq", "2x2"]
    assert rows[0].speedup == 1.0 and all(r.median_s > 0 and math.isfinite(r.loss) for r in rows)
    for r in rows[1:]:
        assert r.speedup == pytest.approx(rows[0].median_s / r.median_s, rel=1e-6), r
    assert "| hq |" in T.format_preset_table(rows)


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_trains_resumes_and_rejects_held_out_seeds(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(T, "_render_scene", fake_scene)       # the real renderer costs 60 ms+ per sample
    out = str(tmp_path / "cli")
    common = ["--out", out, "--workers", "0", "--no-progress"]
    argv = ["--steps", "2", "--batch-size", "1", "--crop", "64x64", "--scale-range", "64,64", *common]
    assert cli.main(argv + ["--stop-after", "1"]) == 0
    assert cli.main(["--resume", *common]) == 0              # the rest of the definition comes from last.pt
    printed = capsys.readouterr().out
    assert "median step time" in printed and "model.safetensors" in printed
    model = load_model(f"{out}/model.safetensors")
    assert model.meta["training"]["command"].startswith("segpp-train --steps 2")
    assert cli.main(["--seed", str(T.HELD_OUT_SEED_BASE - 1), *argv]) == 2
    assert "held-out" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_real_renderers_feed_training(tmp_path, task: str) -> None:
    config = tiny_config(tmp_path, task, steps=2, batch_size=1, workers=1)
    result = T.train(config, progress=False)                 # default dataset_factory: the real renderers
    assert result.model_path is not None and all(math.isfinite(v) for v in result.losses)


def test_init_starts_from_given_weights_and_checks_them(tmp_path) -> None:
    first = run(tiny_config(tmp_path / "a", steps=2))
    trained = load_model(first.model_path, task="seg")
    config = tiny_config(tmp_path / "b", init=str(first.model_path), seed=100)
    model = T.build_training_model(config)
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    with pytest.raises(Exception, match="task"):
        T.build_training_model(tiny_config(tmp_path / "c", task="pose", init=str(first.model_path)))
