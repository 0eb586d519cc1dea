"""Model core: architecture facts, head algebra, layout boundary."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from segpp_ros.model import EPS_FAMILIES, VARIANTS, build_model, count_parameters, get_spec

from .conftest import TINY, TINY2, randomize_batchnorm

ROOT = Path(__file__).resolve().parents[1]


def test_b5_parameter_count_matches_release() -> None:
    """The released SegFormer++ B5 Cityscapes model's count, rebuilt from independent parts: the
    MiT-B5 encoder as HF transformers builds it from its published config, plus the mmseg head
    by its formula (a 1x1 conv without bias and a BatchNorm per stage into 256 channels, the same
    for the 4 x 256 fusion, and a 256 -> 19 classifier with bias)."""
    import transformers

    config = transformers.SegformerConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3],
                                          num_attention_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1], num_labels=19)
    hf = transformers.SegformerForSemanticSegmentation(config)
    encoder = sum(p.numel() for name, p in hf.named_parameters() if name.startswith("segformer."))
    widths, d, classes = (64, 128, 320, 512), 256, 19
    head = sum(c * d + 2 * d for c in widths) + (4 * d * d + 2 * d) + (d * classes + classes)
    model = build_model("b5", num_classes=19)
    assert count_parameters(model) == encoder + head == 81_974_739


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_shapes(name: str) -> None:
    spec = get_spec(name)
    assert spec.heads == (1, 2, 5, 8) and spec.sr_ratios == (8, 4, 2, 1)
    assert all(w // h == spec.widths[0] for w, h in zip(spec.widths, spec.heads))   # constant head dim
    assert get_spec(f"MiT-{name.upper()}") is spec


def test_unknown_variant_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown MiT variant 'b9'"):
        build_model("b9")


def naive_fusion_head(head, features):
    """mmseg SegformerHead exactly as specified: branch convs, upsample, concat, fuse, classify."""
    size = features[0].shape[-2:]
    outs = []
    for f, branch in zip(features, head.convs):
        y = F.relu(branch.bn(F.conv2d(f, branch.conv.weight)))
        outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
    x = F.relu(head.fuse.bn(F.conv2d(torch.cat(outs, 1), head.fuse.conv.weight)))
    return F.conv2d(x, head.classifier.weight, head.classifier.bias)


def naive_mlp_head(head, features):
    """HF/NVlabs all-MLP head as specified: Linear per stage, upsample, concat c4..c1, fuse."""
    size = features[0].shape[-2:]
    outs = []
    for f, linear in zip(features, head.linear_c):
        y = F.linear(f.flatten(2).transpose(1, 2), linear.weight, linear.bias)
        y = y.transpose(1, 2).reshape(f.shape[0], -1, *f.shape[-2:])
        outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
    x = F.relu(head.bn(F.conv2d(torch.cat(outs[::-1], 1), head.fuse.weight)))
    return F.conv2d(x, head.classifier.weight, head.classifier.bias)


@pytest.mark.parametrize("kind,naive", [("mmseg", naive_fusion_head), ("hf", naive_mlp_head)])
@pytest.mark.parametrize("training", [False, True])
def test_heads_equal_the_naive_formulation(kind: str, naive, training: bool) -> None:
    model = randomize_batchnorm(build_model(TINY, num_classes=7, head=kind, head_channels=16))
    model.train(training)
    model.head.dropout = torch.nn.Identity()   # dropout is random in training; the algebra is what we test
    features = [torch.randn(2, c, math.ceil(50 / s), math.ceil(67 / s))
                for c, s in zip(TINY.widths, (1, 2, 4, 8))]
    if training:
        torch.manual_seed(3)
    expected = naive(model.head, [f.clone() for f in features])
    got = model.head(features)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4


def test_patchified_reduction_equals_strided_conv() -> None:
    model = build_model(TINY, num_classes=2)
    attn = model.encoder.stages[0].blocks[0].attn
    h, w = 19, 26                      # not multiples of the reduction ratio 8: conv drops the remainder
    x = torch.randn(2, h * w, TINY.widths[0])
    reduced, kh, kw = attn.reduce(x, h, w)
    conv = attn.sr(x.transpose(1, 2).reshape(2, -1, h, w))
    expected = attn.sr_norm(conv.flatten(2).transpose(1, 2))
    assert (kh, kw) == conv.shape[-2:]
    assert (reduced - expected).abs().max() <= 1e-5


def test_too_small_input_is_a_clear_error() -> None:
    model = build_model(TINY, num_classes=2).eval()
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 16, 16))


def test_eps_is_a_property_of_the_family() -> None:
    ours = build_model(TINY, num_classes=2)
    hf = build_model(TINY, num_classes=2, head="hf")
    nv = build_model(TINY, num_classes=2, head="hf", eps="nvlabs")
    assert ours.encoder.stages[0].norm.eps == 1e-6
    assert hf.encoder.stages[0].norm.eps == 1e-5 and hf.encoder.stages[0].patch_embed.norm.eps == 1e-5
    assert nv.encoder.stages[0].blocks[0].norm1.eps == 1e-6
    assert nv.encoder.stages[0].blocks[0].attn.sr_norm.eps == 1e-5
    assert set(EPS_FAMILIES) >= {"segpp", "mmseg", "nvlabs", "hf"}


def test_describe_rebuilds_the_same_model() -> None:
    model = build_model(TINY2, task="pose", num_keypoints=17, meta={"keypoints": [f"k{i}" for i in range(17)]})
    clone = type(model).from_description(model.describe())
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 96, 72)
    model.eval(), clone.eval()
    assert torch.equal(model(x), clone(x))
    assert clone.keypoints == model.keypoints and clone.task == "pose"


def test_bf16_forward_stays_close_to_fp32() -> None:
    model = randomize_batchnorm(build_model(TINY, num_classes=3, merge="2x2")).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    assert out.shape == ref.shape
    # bf16 keeps 8 significant bits, and the error grows through the layers; wherever fp32's
    # winning class leads by a clear margin (10 % of the logit range), bf16 must pick it too
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.1 * (ref.max() - ref.min())
    assert clear.float().mean() > 0.2, "too few pixels with a clear winner to judge"
    assert torch.equal(out.argmax(1)[clear], ref.argmax(1)[clear])
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_folding_for_inference_is_exact_cast_once_and_never_saved(tmp_path) -> None:
    """BatchNorms folded (and the reduction weight reshaped) once, in float32: the same logits as
    folding every forward; cast with the model; not in the state dict; dropped for training."""
    from segpp_ros.model import load_model, save_model

    for head in ("mmseg", "hf"):
        model = randomize_batchnorm(build_model(TINY, num_classes=5, head=head)).eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.inference_mode():
            per_forward = model(x)
            model.fold_for_inference()
            folded = model(x)
        assert torch.equal(folded, per_forward)
        names = {n for n, _ in model.named_buffers()}
        assert any(n.startswith("head.folded") for n in names) and any("folded_sr_weight" in n for n in names)
        assert not any("folded" in k for k in model.state_dict())
        model.head.fuse.bn.running_var.mul_(4) if head == "mmseg" else model.head.bn.running_var.mul_(4)
        with torch.inference_mode():
            assert torch.equal(model(x), folded)              # folded values stay until refolded
        model.train()
        assert not any("folded" in n for n, _ in model.named_buffers())
        model.eval()
        with torch.inference_mode():
            assert not torch.equal(model(x), folded)          # per forward again: sees the new statistics
        save_model(model, tmp_path / f"{head}.safetensors")
        loaded = load_model(tmp_path / f"{head}.safetensors").fold_for_inference().to(torch.bfloat16)
        assert all(b.dtype == torch.bfloat16 for n, b in loaded.named_buffers() if "folded" in n)
