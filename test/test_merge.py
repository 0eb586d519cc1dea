"""Token merging: parity with tomesd, token counts, presets and runtime switching."""
from __future__ import annotations

import math

import pytest
import torch
from tomesd.merge import bipartite_soft_matching_random2d

from segpp_ros.model import PRESETS, MergeConfig, StageMerge, TokenMerge, build_model, resolve_merge
from segpp_ros.model.merge import STRATEGIES, bipartite_soft_matching_2d, neighbour_merge_2d

from .conftest import TINY, randomize_batchnorm


def canonical(tokens: torch.Tensor) -> torch.Tensor:
    """Merged tokens sorted by their first feature. tomesd orders destinations by an unstable
    argsort, so the same set of merged tokens may come out in another order."""
    return torch.stack([t[t[:, 0].argsort()] for t in tokens])


@pytest.mark.parametrize("h,w,cell,ratio", [
    (16, 16, (2, 2), 0.5),
    (13, 10, (4, 4), 0.9),    # neither side divisible by the cell: ragged sources
    (7, 9, (2, 2), 0.6),
    (12, 20, (2, 4), 0.7),    # non-square cell
    (32, 32, (4, 4), 0.99),   # r capped at the number of sources
])
def test_bsm_matches_tomesd(h: int, w: int, cell: tuple[int, int], ratio: float) -> None:
    x = torch.randn(3, h * w, 24)
    r = int(h * w * ratio)
    ref_merge, ref_unmerge = bipartite_soft_matching_random2d(x, w, h, cell[1], cell[0], r, no_rand=True)
    ours = bipartite_soft_matching_2d(x, h, w, TokenMerge("bsm", ratio, cell))
    merged_ref, merged = ref_merge(x), ours.merge(x)
    assert merged.shape == merged_ref.shape
    assert (canonical(merged) - canonical(merged_ref)).abs().max() <= 1e-6
    # unmerge is position by position, so it is compared without any reordering
    assert (ours.unmerge(merged) - ref_unmerge(merged_ref)).abs().max() <= 1e-6
    # an attention-like map applied in merged space, then unmerged, agrees as well
    proj = torch.randn(24, 5)
    assert (ours.unmerge(merged @ proj) - ref_unmerge(merged_ref @ proj)).abs().max() <= 1e-5


def test_bsm_merge_is_mean_including_destination() -> None:
    # two tokens per 1x2 cell, identical directions: every source merges into its destination
    x = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]]])
    m = bipartite_soft_matching_2d(x, 2, 2, TokenMerge("bsm", 0.5, (1, 2)))
    merged = m.merge(x)
    assert torch.allclose(canonical(merged), canonical(torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])))
    assert torch.allclose(m.unmerge(merged), torch.tensor([[[2.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 3.0]]]))


@pytest.mark.parametrize("h,w,cell", [(8, 8, (2, 2)), (7, 9, (2, 2)), (5, 11, (2, 3))])
def test_n2d_averages_cells_with_ragged_borders(h: int, w: int, cell: tuple[int, int]) -> None:
    x = torch.randn(2, h * w, 6)
    m = neighbour_merge_2d(x, h, w, TokenMerge("n2d", 0.0, cell))
    merged = m.merge(x)
    sy, sx = cell
    gh, gw = math.ceil(h / sy), math.ceil(w / sx)
    grid = x.view(2, h, w, 6)
    expected = torch.stack([grid[:, i * sy:(i + 1) * sy, j * sx:(j + 1) * sx].mean(dim=(1, 2))
                            for i in range(gh) for j in range(gw)], dim=1)
    assert torch.allclose(merged, expected, atol=1e-6)
    out = m.unmerge(merged).view(2, h, w, 6)
    for i in range(h):
        for j in range(w):
            assert torch.equal(out[:, i, j], merged[:, (i // sy) * gw + j // sx])


# DESIGN.md §3: (queries, keys/values) in the first block of each stage at 1024x1024.
TOKEN_TABLE = {
    "none": [(65536, 1024), (16384, 1024), (4096, 1024), (1024, 1024)],
    "hq": [(65536, 410), (16384, 410), (820, 1024), (205, 1024)],
    "fast": [(65536, 103), (16384, 103), (410, 1024), (103, 1024)],
    "2x2": [(16384, 1024), (4096, 1024), (1024, 1024), (256, 1024)],
}


@pytest.mark.parametrize("preset", sorted(TOKEN_TABLE))
def test_token_counts_at_1024(preset: str) -> None:
    model = build_model(TINY, num_classes=3, merge=preset).eval()
    with torch.inference_mode():
        model(torch.randn(1, 3, 1024, 1024))
    assert model.token_counts() == TOKEN_TABLE[preset]


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_every_preset_changes_output_and_none_restores_it(task: str) -> None:
    model = randomize_batchnorm(build_model(TINY, task=task, num_classes=4)).eval()
    x = torch.randn(2, 3, 200, 264)
    with torch.inference_mode():
        reference = model(x).clone()
        for name in PRESETS:
            if name == "none":
                continue
            model.set_merge(name)
            out = model(x)
            assert out.shape == reference.shape == (2, 4, 50, 66)
            assert not torch.allclose(out, reference, atol=1e-4), f"preset {name} changed nothing"
            model.set_merge("none")
            assert torch.equal(model(x), reference), f"set_merge('none') after {name} is not bit-identical"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_batch_equals_single_images(preset: str) -> None:
    """Matching is per image: a batch gives what each image gives alone."""
    model = randomize_batchnorm(build_model(TINY, num_classes=3, merge=preset)).eval()
    x = torch.randn(3, 3, 150, 181)
    with torch.inference_mode():
        batched = model(x)
        for i in range(3):
            assert torch.allclose(batched[i:i + 1], model(x[i:i + 1]), atol=1e-5)


@pytest.mark.parametrize("size", [(97, 130), (65, 290), (256, 255)])
def test_output_size_is_ceil_quarter_for_every_preset(size: tuple[int, int]) -> None:
    model = build_model(TINY, num_classes=2).eval()
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        for name in PRESETS:
            model.set_merge(name)
            assert model(x).shape[-2:] == (math.ceil(size[0] / 4), math.ceil(size[1] / 4))


def test_merge_is_runtime_state_not_weights() -> None:
    model = build_model(TINY, num_classes=2)
    keys = set(model.state_dict())
    model.set_merge("hq")
    assert set(model.state_dict()) == keys
    assert model.merge.name == "hq"


def test_custom_configuration_round_trips_through_dict() -> None:
    config = {"stages": [
        {"q": {"mode": "n2d", "cell": [2, 2]}, "kv": {"mode": "bsm", "ratio": 0.5, "cell": [2, 2]}},
        {"kv": {"mode": "bsm", "ratio": 0.3, "cell": [4, 4]}},
        {"q": {"mode": "bsm", "ratio": 0.5, "cell": [2, 2]}},
        {},
    ]}
    model = build_model(TINY, num_classes=2).eval()
    resolved = model.set_merge(config)
    assert resolved.name == "custom"
    assert resolved.stages[0].q == TokenMerge("n2d", 0.0, (2, 2))
    assert resolved.stages[3] == StageMerge()
    assert resolve_merge(resolved.to_dict()) == resolved
    with torch.inference_mode():
        model(torch.randn(1, 3, 128, 96))
    assert model.token_counts()[0] == (192, 6)   # 32x24 grid: n2d q -> 16x12; sr 8 -> 4x3 kv, r = 6


def test_preset_based_override() -> None:
    resolved = resolve_merge({"preset": "hq", "downsample": 2})
    assert resolved.stages == PRESETS["hq"].stages and resolved.downsample == 2


@pytest.mark.parametrize("bad,message", [
    ("turbo", "unknown merge preset"),
    ({"stages": [{"q": {"mode": "magic"}}, {}, {}, {}]}, r"stages\[0\]\.q\.mode 'magic' is unknown"),
    ({"stages": [{}, {"kv": {"mode": "bsm", "ratio": 1.5}}, {}, {}]}, r"stages\[1\]\.kv\.ratio must be .* \[0, 1\)"),
    ({"stages": [{"kv": {"mode": "bsm", "ratio": 0.5, "cell": [0, 2]}}, {}, {}, {}]}, r"stages\[0\]\.kv\.cell"),
    ({"stages": [{}, {}, {}, {"q": {"cell": [2.5, 2]}}]}, r"stages\[3\]\.q\.cell must be two positive integers"),
    ({"stages": [{}, {}]}, "4 entries"),
    ({"stages": [{"q": {"mode": "bsm", "speed": 3}}, {}, {}, {}]}, r"stages\[0\]\.q has unknown keys \['speed'\]"),
    ({"stages": [{}, {"query": {}}, {}, {}]}, r"stages\[1\] has unknown keys \['query'\]"),
    ({"stages": [{}, {}, "bsm", {}]}, r"stages\[2\] must be a mapping"),
    ({"stage": []}, r"unknown keys \['stage'\]"),
    ({"downsample": 0}, "downsample must be an integer >= 1"),
    ({"preset": "turbo"}, "preset 'turbo' is unknown"),
])
def test_invalid_configurations_are_rejected_with_a_reason(bad, message: str) -> None:
    model = build_model(TINY, num_classes=2)
    before = model.merge
    with pytest.raises(ValueError, match=message):
        model.set_merge(bad)
    assert model.merge is before


def test_registry_has_one_function_per_strategy() -> None:
    assert set(STRATEGIES) == {"none", "bsm", "n2d"}
    assert isinstance(PRESETS["hq"], MergeConfig)


def test_training_with_merging_backpropagates() -> None:
    model = build_model(TINY, num_classes=3, merge="hq", drop_path_rate=0.1).train()
    out = model(torch.randn(2, 3, 128, 128))
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_cached_merge_indices_from_inference_mode_serve_training() -> None:
    """Partition/cell indices are cached per grid: one built under inference_mode must not
    poison a later training step ('inference tensors cannot be saved for backward')."""
    model = build_model(TINY, num_classes=3).eval()
    x = torch.randn(1, 3, 136, 168)
    for preset in ("hq", "2x2"):
        model.set_merge(preset)
        with torch.inference_mode():
            model(x)
        model.train()
        model(x).sum().backward()
        model.eval()


def test_an_all_zero_token_is_not_merged_first() -> None:
    """Cosine similarity of an all-zero token used to be NaN, which sorts as the most similar: the
    zero token was merged before any real pair. With the epsilon it is the least similar."""
    setting = TokenMerge("bsm", 1 / 64, (2, 2))           # r = 1: only the most similar source merges
    x = torch.randn(1, 8 * 8, 16)
    x[0, 1] = x[0, 0] * 1.01                               # source 1 is nearly its destination 0
    x[0, 9] = 0                                            # source 9: an all-zero token
    m = bipartite_soft_matching_2d(x, 8, 8, setting)
    back = m.unmerge(m.merge(x))
    assert torch.equal(back[0, 9], x[0, 9])                # the zero token kept to itself
    torch.testing.assert_close(back[0, 1], (x[0, 0] + x[0, 1]) / 2)


def test_16_bit_features_are_matched_like_their_float32_values() -> None:
    """Cosine scores near 1 differ by less than float16's resolution (5e-4): computed in 16 bits
    they tie, and which sources merge depended on the sort. Matched in float32, half-precision
    features merge exactly as the same values in float32 do."""
    setting = TokenMerge("bsm", 1 / 64, (2, 2))           # r = 1: the single most similar source
    base = torch.zeros(16)
    base[0] = 1.0
    x = torch.randn(1, 64, 16) * 0.5
    for k, src in enumerate((1, 3, 5, 7, 17, 19)):         # sources of destinations 0, 2, 4, 6, 16, 18
        x[0, src - 1] = base
        x[0, src] = base
        x[0, src, 1] = 0.01 * (6 - k)                       # cos = 1 - eps^2 / 2: all within 2e-3; the later, the closer
    half = x.to(torch.float16)
    merged16 = bipartite_soft_matching_2d(half, 8, 8, setting)
    merged32 = bipartite_soft_matching_2d(half.float(), 8, 8, setting)
    probe = torch.arange(64.0).view(1, 64, 1)
    assert torch.equal(merged16.unmerge(merged16.merge(probe)), merged32.unmerge(merged32.merge(probe)))
