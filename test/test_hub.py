"""Hugging Face model IDs as weights (owner/name[@revision]): resolved through a huggingface_hub
cache built here from a real transformers save_pretrained (no network), in the inference core
and through the node process; offline with nothing cached, one clear refusal."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import transformers
from huggingface_hub import constants

from segpp_ros.inference import Segmenter
from segpp_ros.inference.loader import resolve_weights

from .rosgraph import NodeProcess, Probe, refused_start, require_isolated_network, wait_for

REPO = "segpp-test/tiny-segformer"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABELS = {0: "sky", 1: "road", 2: "car"}


def hub_cache(root: Path) -> Path:
    """A huggingface_hub cache holding REPO at COMMIT (refs/main -> snapshots/COMMIT), as a download
    leaves it: the config and the safetensors weights of a tiny random SegFormer."""
    config = transformers.SegformerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 2, 3, 4], decoder_hidden_size=16, num_labels=3,
                                          id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    repo = root / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = hub_cache(tmp_path / "hub")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_model_id_loads_from_the_cache(offline_cache) -> None:
    for weights in (REPO, f"{REPO}@{COMMIT}"):
        seg = Segmenter(weights, device="cpu")
        assert seg.classes == ["sky", "road", "car"] and seg.weights.endswith(COMMIT)
        assert seg(np.zeros((64, 64, 3), np.uint8)).labels.shape == (64, 64)


def test_offline_without_the_model_cached_says_what_to_do(offline_cache) -> None:
    with pytest.raises(ValueError) as err:
        resolve_weights("nvidia/segformer-b0-finetuned-cityscapes-1024-1024")
    text = str(err.value)
    assert "nvidia/segformer-b0-finetuned-cityscapes-1024-1024" in text and "HF_HUB_OFFLINE" in text
    assert str(offline_cache) in text


def test_an_existing_path_is_a_path_even_if_it_looks_like_an_id(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "b0.pth").write_bytes(b"")
    assert resolve_weights("models/b0.pth") == Path("models/b0.pth")
    assert resolve_weights("/no/such/file.pth") == Path("/no/such/file.pth")       # not an ID: left to the loader


@pytest.mark.ros_node
def test_the_node_takes_a_model_id(tmp_path) -> None:
    require_isolated_network()
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from segpp.msg import LabelPalette
    from vision_msgs.msg import LabelInfo

    cache = hub_cache(tmp_path / "hub")
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    params = {"device": "cpu", "weights": REPO, "pose.enable": False, "warmup_frames": 1, "max_side": 64}
    node = NodeProcess(tmp_path, params, {}, name="segpp_hub", env=env)
    probe = Probe("segpp_hub_probe")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.subscribe(LabelInfo, "/segpp_hub/label_info", latched)
    probe.subscribe(LabelPalette, "/segpp_hub/palette", latched)
    try:
        info = wait_for(lambda: probe.messages("/segpp_hub/label_info"), 120, "label_info", node)[-1]
        assert [c.class_name for c in info.class_map] == ["sky", "road", "car"]
        palette = wait_for(lambda: probe.messages("/segpp_hub/palette"), 30, "palette", node)[-1]
        assert palette.weights.endswith(COMMIT)
    finally:
        probe.close()
        assert node.stop() == 0
    # not cached and offline: one fatal line naming the ID, no traceback
    shutil.rmtree(cache / f"models--{REPO.replace('/', '--')}")
    log = refused_start(tmp_path, params, "segpp_hub_missing", env)
    assert REPO in log and "HF_HUB_OFFLINE=1" in log, log[-2000:]
