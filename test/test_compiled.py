"""The OpenVINO backend (segpp_ros.inference.compiled) against eager PyTorch: parity of every preset
and of a custom configuration, live switching without a reload, the bounded set of compiled
models, compilation in the background while frames run eagerly, the export cache, bf16, the
pose model, and segpp-export's ONNX file checked with ONNX Runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segpp_ros.inference import PoseEstimator, Segmenter
from segpp_ros.inference.compiled import OpenVINOForward, export_onnx, resolve_backend
from segpp_ros.model import PRESETS, build_model, resolve_merge, save_model
from segpp_ros.training.data.scenes import render_scene

from .conftest import TINY2, one_thread

CUSTOM = {"stages": [{"kv": {"mode": "bsm", "ratio": 0.5, "cell": [2, 2]}}, {"q": {"mode": "n2d", "cell": [2, 2]}},
                     {"q": {"mode": "bsm", "ratio": 0.7, "cell": [2, 2]}, "kv": {"mode": "bsm", "ratio": 0.3}}, {}]}
SCENE = render_scene(10_000_555, 120, 160).image


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export folder for the module: a configuration exported once serves every test."""
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(scope="module")
def tiny_model():
    model = build_model(TINY2, num_classes=7, meta={"classes": [f"c{i}" for i in range(7)]}).eval()
    return model.fold_for_inference()


@pytest.mark.parametrize("merge", [*PRESETS, "custom"])
def test_every_preset_and_a_custom_configuration_match_pytorch(tiny_model, cache, merge) -> None:
    """The compiled graph of each configuration gives PyTorch's logits (<= 1e-4)."""
    config = resolve_merge(CUSTOM if merge == "custom" else merge)
    forward = OpenVINOForward(tiny_model, key=lambda: tiny_model.merge, threads=1, cache_dir=cache)
    tiny_model.set_merge(config)
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        want = tiny_model(x)
        got = forward(x)
    assert got.shape == want.shape and forward.compiled == 1 and forward.eager_calls == 0
    assert float((got - want).abs().max()) <= 1e-4, merge
    tiny_model.set_merge("none")


def test_a_compiled_segmenter_switches_live_and_keeps_the_labels(tmp_path) -> None:
    """The embedded model through OpenVINO: the labels of each preset are PyTorch's (>= 99.99 %),
    and change with the preset, without a reload."""
    with one_thread():
        torch_seg = Segmenter(None, device="cpu", max_side=128)
        compiled = Segmenter(None, device="cpu", max_side=128, backend="openvino")
        assert compiled.backend == "openvino" and "openvino" in compiled.describe()
        model = compiled.model
        labels = {}
        for preset in ("none", "fast", "2x2"):
            torch_seg.set_merge(preset)
            compiled.set_merge(preset)
            labels[preset] = compiled(SCENE).labels
            assert (labels[preset] == torch_seg(SCENE).labels).mean() >= 0.9999, preset
            assert compiled.model is model                    # no reload
    assert (labels["fast"] != labels["none"]).any() and compiled.forward.compiled == 3


def test_the_set_of_compiled_models_is_bounded(tiny_model, tmp_path) -> None:
    forward = OpenVINOForward(tiny_model, key=lambda: tiny_model.merge, threads=1, max_models=2, cache_dir=tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for preset in ("none", "2x2", "downsample", "none"):
            tiny_model.set_merge(preset)
            forward(x)
    assert forward.compiled == 2                              # 'none' came back: compiled again
    assert [r.merge for r in forward.records] == ["none", "2x2", "downsample", "none"]
    assert forward.records[-1].cached_export                   # its export was on disk already
    tiny_model.set_merge("none")


def test_in_the_background_frames_run_eagerly_until_the_compiled_model_is_ready(tiny_model, tmp_path) -> None:
    forward = OpenVINOForward(tiny_model, key=lambda: tiny_model.merge, threads=1, background=True,
                              cache_dir=tmp_path)
    tiny_model.set_merge("hq")
    x = torch.randn(1, 3, 64, 96)
    try:
        with torch.inference_mode():
            first = forward(x)                                   # queued; PyTorch answers
            assert forward.eager_calls == 1
            forward.wait()
            second = forward(x)
        assert forward.compiled == 1 and forward.eager_calls == 1 and "1 compiled" in forward.status()
        assert float((first - second).abs().max()) <= 1e-4
        # the export ran on a copy: the model itself kept its configuration throughout
        assert tiny_model.merge.name == "hq"
    finally:
        forward.close()
        tiny_model.set_merge("none")


def test_a_failed_compilation_runs_eagerly_and_is_said(tiny_model, tmp_path, monkeypatch, caplog) -> None:
    forward = OpenVINOForward(tiny_model, key=lambda: tiny_model.merge, threads=1, cache_dir=tmp_path)
    monkeypatch.setattr("segpp_ros.inference.compiled.export_onnx",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no exporter today")))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = forward(x)
        again = forward(x)
    assert forward.eager_calls == 2 and "no exporter today" in next(iter(forward.failures.values()))
    assert torch.equal(out, again) and "runs in PyTorch" in caplog.text and "1 failed" in forward.status()


def test_bf16_is_opt_in_and_close(tiny_model, tmp_path) -> None:
    forward = OpenVINOForward(tiny_model, key=lambda: tiny_model.merge, precision="bf16", threads=1,
                              cache_dir=tmp_path)
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        want, got = tiny_model(x), forward(x)
    assert float((got.argmax(1) == want.argmax(1)).float().mean()) >= 0.95
    with pytest.raises(ValueError, match="fp32 or bf16"):
        OpenVINOForward(tiny_model, key=lambda: tiny_model.merge, precision="fp16")


def test_backend_choices() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "openvino"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt", torch.device("cpu"))
    with pytest.raises(ValueError, match="fp32 or bf16"):
        Segmenter(None, device="cpu", precision="fp16", backend="openvino")


def test_the_pose_model_through_openvino_gives_the_same_keypoints() -> None:
    from segpp_ros.inference.pose import whole_frame_box

    image = render_scene(10_000_556, 256, 192).image
    with one_thread():
        a = PoseEstimator(None, device="cpu")(image, [whole_frame_box(256, 192)])
        b = PoseEstimator(None, device="cpu", backend="openvino")(image, [whole_frame_box(256, 192)])
    assert np.abs(a.persons[0].keypoints[:, :2] - b.persons[0].keypoints[:, :2]).max() <= 0.1
    np.testing.assert_allclose(a.persons[0].keypoints[:, 2], b.persons[0].keypoints[:, 2], atol=1e-4)


@pytest.mark.parametrize("merge", list(PRESETS))
def test_an_onnx_export_runs_in_onnx_runtime(tiny_model, tmp_path, merge) -> None:
    """segpp-export's file: ONNX Runtime's logits are PyTorch's for every preset (<= 1e-4), and the
    file names its classes, merging and input shape."""
    import onnx
    import onnxruntime as ort

    path = export_onnx(tiny_model, (1, 3, 96, 128), tmp_path / f"{merge}.onnx", merge)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == [f"c{i}" for i in range(7)] and json.loads(meta["merge"])["name"] == merge
    assert json.loads(meta["input_shape"]) == [1, 3, 96, 128] and tiny_model.merge.name == "none"
    x = torch.randn(1, 3, 96, 128)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    tiny_model.set_merge(merge)
    with torch.inference_mode():
        want = tiny_model(x).numpy()
    tiny_model.set_merge("none")
    assert np.abs(got - want).max() <= 1e-4


def test_segpp_export_writes_a_checked_file(tmp_path, capsys) -> None:
    from segpp_ros.cli import export

    weights = tmp_path / "seg.safetensors"
    save_model(build_model(TINY2, num_classes=5).eval(), weights)
    out = tmp_path / "seg-fast.onnx"
    assert export.main([str(weights), str(out), "--size", "64x96", "--merge", "fast", "--check"]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "ONNX Runtime" in text and "max |logit difference|" in text
    assert export.main([str(weights), str(tmp_path / "x.onnx"), "--merge", "quick"]) == 2
