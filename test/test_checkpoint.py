"""Checkpoint loading: every supported layout round-trips to identical logits, and nothing
unsafe, incomplete or mismatched loads silently.

Foreign files are written by small mappings in this file, independent of the loader's own
rule tables; the HF case uses a real transformers model and its save_pretrained output.
"""
from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from safetensors import safe_open

from segpp_ros.cli.convert import main as convert_main
from segpp_ros.model import CheckpointError, MiTSpec, SegFormerPP, build_model, load_model, save_model

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

TINY = MiTSpec("custom", (8, 16, 24, 32), (1, 2, 1, 1), heads=(1, 2, 3, 4))
INPUT = torch.randn(1, 3, 70, 98, generator=torch.Generator().manual_seed(0))   # not a multiple of 32
SEG_META = {"classes": ["road", "sidewalk", "building", "wall", "fence"],
            "palette": [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153]]}


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every float parameter and buffer random (LN/BN included), so a mis-mapped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)


def tiny(task: str = "seg", head: str = "mmseg", eps: str = "segpp", meta: dict | None = None,
         outputs: int = 5, seed: int = 0) -> SegFormerPP:
    model = build_model(TINY, task, outputs, head, head_channels=16, eps=eps, meta=meta)
    randomize(model, seed)
    return model.eval()


def logits(model: SegFormerPP) -> Tensor:
    with torch.no_grad():
        return model(INPUT.to(next(model.parameters()).dtype))


def assert_same_logits(loaded: SegFormerPP, source: SegFormerPP) -> None:
    assert not loaded.training
    torch.testing.assert_close(logits(loaded), logits(source), rtol=0, atol=0)


# --- independent writers of the foreign layouts ---------------------------------------------------

_MMSEG_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attn.attn.out_proj", "attn.sr": "attn.sr",
                "attn.sr_norm": "attn.norm", "ffn.fc1": "ffn.layers.0", "ffn.dwconv": "ffn.layers.1",
                "ffn.fc2": "ffn.layers.4"}


def to_mmseg(sd: StateDict, pose: bool = False) -> StateDict:
    """Our names -> mmseg MixVisionTransformer + SegformerHead (or mmpose head) names."""
    out = {}
    for key, t in sd.items():
        p = key.split(".")
        if p[0] == "head":
            rest = ".".join(p[1:])
            rest = rest.replace("fuse.", "fusion_conv.").replace("classifier.", "final_layer." if pose else "conv_seg.")
            out[("head." if pose else "decode_head.") + rest] = t
        elif p[3] == "patch_embed":
            out[f"backbone.layers.{p[2]}.0.{'projection' if p[4] == 'proj' else 'norm'}.{p[5]}"] = t
        elif p[3] == "norm":
            out[f"backbone.layers.{p[2]}.2.{p[4]}"] = t
        else:
            prefix, module, param = f"backbone.layers.{p[2]}.1.{p[4]}.", ".".join(p[5:-1]), p[-1]
            if module == "attn.q":      # q rows, then k and v rows: mmcv's in_proj
                out[prefix + f"attn.attn.in_proj_{param}"] = torch.cat([t, sd[key.replace(".q.", ".kv.")]])
            elif module != "attn.kv":
                conv_1x1 = module in ("ffn.fc1", "ffn.fc2") and param == "weight"
                out[prefix + f"{_MMSEG_BLOCK[module]}.{param}"] = t[:, :, None, None] if conv_1x1 else t
    return out


_NVLABS_BLOCK = {"attn.sr_norm": "attn.norm", "ffn.fc1": "mlp.fc1", "ffn.dwconv": "mlp.dwconv.dwconv",
                 "ffn.fc2": "mlp.fc2"}
_NVLABS_HEAD = {"fuse": "linear_fuse.conv", "bn": "linear_fuse.bn", "classifier": "linear_pred"}


def to_nvlabs(sd: StateDict) -> StateDict:
    """Our names (head 'hf') -> NVlabs SegFormer names, 1-based stages, under backbone./decode_head."""
    out = {}
    for key, t in sd.items():
        p = key.split(".")
        if p[0] == "head" and p[1] == "linear_c":
            out[f"decode_head.linear_c{int(p[2]) + 1}.proj.{p[3]}"] = t
        elif p[0] == "head":
            out[f"decode_head.{_NVLABS_HEAD[p[1]]}.{'.'.join(p[2:])}"] = t
        elif p[3] == "patch_embed":
            out[f"backbone.patch_embed{int(p[2]) + 1}.{p[4]}.{p[5]}"] = t
        elif p[3] == "norm":
            out[f"backbone.norm{int(p[2]) + 1}.{p[4]}"] = t
        else:
            module = ".".join(p[5:-1])
            out[f"backbone.block{int(p[2]) + 1}.{p[4]}.{_NVLABS_BLOCK.get(module, module)}.{p[-1]}"] = t
    return out


@contextlib.contextmanager
def fake_mmengine() -> Iterator[type]:
    """mmengine's HistoryBuffer, importable only inside the block (as on the training machine)."""
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    assert not any(n in sys.modules for n in names)

    class HistoryBuffer:
        def __init__(self, values: list[float], counts: list[int]) -> None:
            self.max_length = 1000000
            self._log_history = np.array(values)
            self._count_history = np.array(counts)

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = names[-1], "HistoryBuffer"
    modules = {n: types.ModuleType(n) for n in names}
    modules[names[-1]].HistoryBuffer = HistoryBuffer
    sys.modules.update(modules)
    try:
        yield HistoryBuffer
    finally:
        for n in names:
            sys.modules.pop(n)


def save_mmengine(path: Path, state_dict: StateDict, dataset_meta: dict, legacy: bool = False) -> None:
    """A runner checkpoint as mmengine writes it: meta, optimizer, schedulers, message hub."""
    with fake_mmengine() as HistoryBuffer:
        runner = {
            "meta": {"mmengine_version": "0.10.3", "epoch": 0, "iter": 160000, "seed": np.int64(1234),
                     "cfg": "model = dict(type='EncoderDecoder')", "experiment_name": "segformerpp_b0",
                     "time": "20240101_000000", "dataset_meta": dataset_meta},
            "state_dict": OrderedDict(state_dict),
            "message_hub": {
                "log_scalars": {"train/loss": HistoryBuffer([0.52, 0.48], [1, 1]),
                                "train/lr": HistoryBuffer([6e-5], [1])},
                "runtime_info": {"iter": np.int64(160000), "max_iters": 160000, "lr": np.float64(6e-5),
                                 "dataset_meta": dataset_meta},
                "resumed_keys": OrderedDict(iter=True, max_iters=True)},
            "optimizer": {"state": {0: {"step": torch.tensor(160000.0), "exp_avg": torch.zeros(3),
                                        "exp_avg_sq": torch.zeros(3)}},
                          "param_groups": [{"lr": 6e-5, "betas": (0.9, 0.999), "weight_decay": 0.01,
                                            "params": [0]}]},
            "param_schedulers": [{"power": 1.0, "eta_min": 0.0, "begin": 1500, "end": 160000, "by_epoch": False,
                                  "last_step": 160000, "base_values": [6e-5], "_last_value": [1e-9]}],
        }
        torch.save(runner, path, _use_new_zipfile_serialization=not legacy)


# --- our format ------------------------------------------------------------------------------------

def test_segpp_format_round_trip(tmp_path: Path) -> None:
    model = tiny(meta=SEG_META)
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert loaded.describe() == model.describe()
    assert loaded.classes == SEG_META["classes"] and loaded.palette == SEG_META["palette"]
    assert_same_logits(loaded, model)


def test_segpp_format_fp16(tmp_path: Path) -> None:
    model = tiny(meta=SEG_META)
    path = save_model(model, tmp_path / "model.safetensors", fp16=True)
    with safe_open(str(path), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16, torch.int64}              # BN step counters stay integers
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for t in rounded.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    loaded = load_model(path)
    assert next(loaded.parameters()).dtype == torch.float32
    assert_same_logits(loaded, rounded)
    assert next(load_model(path, dtype=torch.float16).parameters()).dtype == torch.float16


def test_bare_state_dict_in_our_names_takes_task_hint(tmp_path: Path) -> None:
    model = tiny(task="pose", outputs=3)
    torch.save(model.state_dict(), tmp_path / "pose.pth")
    loaded = load_model(tmp_path / "pose.pth", task="pose")
    assert loaded.task == "pose"
    assert_same_logits(loaded, model)


def test_published_variant_is_named_and_checked(tmp_path: Path) -> None:
    model = build_model("b0", num_classes=4).eval()
    save_model(model, tmp_path / "b0.safetensors")
    assert load_model(tmp_path / "b0.safetensors", variant="mit_b0").spec.name == "b0"
    with pytest.raises(CheckpointError, match=r"'b1'.*\[64, 128, 320, 512\].*b0 \(widths \[32, 64, 160, 256\]"):
        load_model(tmp_path / "b0.safetensors", variant="b1")


# --- SegFormer++ / mmseg / mmpose ----------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip-numpy2", "legacy-numpy1-names"])
def test_mmengine_segmentation_checkpoint(tmp_path: Path, legacy: bool) -> None:
    model = tiny(meta=SEG_META)
    path = tmp_path / "segformerpp_b0.pth"
    dataset_meta = {"classes": tuple(SEG_META["classes"]), "palette": SEG_META["palette"], "reduce_zero_label": False}
    save_mmengine(path, to_mmseg(model.state_dict()), dataset_meta, legacy)
    data = path.read_bytes()
    assert b"mmengine.logging.history_buffer" in data      # the stand-in is really exercised
    if legacy:      # what numpy 1.x writes: the loader must know the old module names too
        assert b"numpy._core.multiarray" in data
        path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    else:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        assert {"mmengine.logging.history_buffer.HistoryBuffer", "numpy._core.multiarray.scalar"} <= unsafe
    allow_list_before = set(torch.serialization.get_safe_globals())

    loaded = load_model(path, task="seg", num_classes=5)

    assert "mmengine" not in sys.modules
    assert set(torch.serialization.get_safe_globals()) == allow_list_before      # allow-list only for our call
    assert loaded.classes == SEG_META["classes"] and loaded.palette == SEG_META["palette"]
    assert (loaded.head_type, loaded.eps.block, loaded.eps.embed) == ("mmseg", 1e-6, 1e-6)
    assert_same_logits(loaded, model)


def test_mmpose_checkpoint_loads_as_pose(tmp_path: Path) -> None:
    model = tiny(task="pose", outputs=3)
    dataset_meta = {"dataset_name": "coco", "num_keypoints": 3,
                    "keypoint_id2name": {0: "nose", 1: "left_eye", 2: "right_eye"},
                    "flip_pairs": [(1, 2)], "skeleton_links": [(0, 1), (0, 2)],
                    "keypoint_colors": np.array([[51, 153, 255]] * 3, dtype=np.uint8),
                    "sigmas": np.array([0.026, 0.025, 0.025], dtype=np.float32)}
    path = tmp_path / "segformerpp_pose.pth"
    save_mmengine(path, to_mmseg(model.state_dict(), pose=True), dataset_meta)
    loaded = load_model(path)
    assert (loaded.task, loaded.num_outputs) == ("pose", 3)
    assert loaded.keypoints == ["nose", "left_eye", "right_eye"]
    assert loaded.skeleton == [[0, 1], [0, 2]] and loaded.flip_pairs == [[1, 2]]
    assert_same_logits(loaded, model)


# --- NVlabs and Hugging Face ------------------------------------------------------------------------

def test_nvlabs_checkpoint(tmp_path: Path) -> None:
    model = tiny(head="hf", eps="nvlabs", meta=SEG_META)
    sd = to_nvlabs(model.state_dict())
    # mmseg's BaseDecodeHead builds a conv_seg that NVlabs' head never uses; their files carry it
    sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"] = torch.zeros(5, 16, 1, 1), torch.zeros(5)
    meta = {"CLASSES": tuple(SEG_META["classes"]), "PALETTE": SEG_META["palette"], "mmcv_version": "1.2.7"}
    torch.save({"meta": meta, "state_dict": sd}, tmp_path / "segformer.b0.pth")
    loaded = load_model(tmp_path / "segformer.b0.pth")
    assert (loaded.head_type, loaded.eps.block, loaded.eps.embed) == ("hf", 1e-6, 1e-5)
    assert loaded.classes == SEG_META["classes"]
    assert_same_logits(loaded, model)


def test_hugging_face_folder_matches_transformers(tmp_path: Path) -> None:
    import transformers  # pinned in requirements/test.txt: a missing one is an error, not a skip
    labels = {0: "sky", 1: "road", 2: "car"}
    config = transformers.SegformerConfig(
        hidden_sizes=list(TINY.widths), depths=list(TINY.depths), num_attention_heads=list(TINY.heads),
        decoder_hidden_size=16, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    hf = transformers.SegformerForSemanticSegmentation(config).eval()
    randomize(hf, seed=3)
    hf.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        reference = hf(pixel_values=INPUT).logits
    for path in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        loaded = load_model(path, num_classes=3)
        assert (loaded.head_type, loaded.eps.block, loaded.eps.embed) == ("hf", 1e-5, 1e-5)
        assert loaded.classes == ["sky", "road", "car"]
        diff = (logits(loaded) - reference).abs().max().item()
        print(f"max |ours - transformers| = {diff:.2e}")
        assert diff <= 1e-4


@pytest.mark.parametrize("layout", ["pytorch_model.bin", "shards"])
def test_hugging_face_bin_and_sharded_folders(tmp_path: Path, layout: str) -> None:
    """The other Hugging Face folders: a pickled pytorch_model.bin and safetensors shards with
    their index; the same logits as transformers'."""
    import transformers

    config = transformers.SegformerConfig(
        hidden_sizes=list(TINY.widths), depths=list(TINY.depths), num_attention_heads=list(TINY.heads),
        decoder_hidden_size=16, num_labels=3)
    hf = transformers.SegformerForSemanticSegmentation(config).eval()
    randomize(hf, seed=4)
    if layout == "shards":
        hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
        assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) > 1
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    else:
        # older transformers releases (and many Hub repositories) hold a pickled state dict;
        # transformers 5 writes safetensors only, so the folder is made the old way here
        # (the on-disk key names, which save_pretrained writes: not transformers 5's in-memory ones)
        from safetensors.torch import load_file

        hf.save_pretrained(tmp_path / "hf")
        tensors = load_file(tmp_path / "hf" / "model.safetensors")
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(tensors, tmp_path / "hf" / "pytorch_model.bin")
    with torch.no_grad():
        reference = hf(pixel_values=INPUT).logits
    assert (logits(load_model(tmp_path / "hf", num_classes=3)) - reference).abs().max().item() <= 1e-4


# --- refusals and errors ------------------------------------------------------------------------

class Payload:
    """Pickles as a call of ``func(arg)``: what a malicious checkpoint does."""

    def __init__(self, func: Callable[[str], Any], arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple:
        return self.func, (self.arg,)


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "payload-ran"
    payload = (Payload(os.system, f"touch '{marker}'") if kind == "os.system"
               else Payload(eval, f"open({str(marker)!r}, 'w').close()"))
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": to_mmseg(tiny().state_dict()), "meta": {"note": payload}}, path)

    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and "execute code" in message and "safetensors" in message
    assert ("system" if kind == "os.system" else "eval") in message
    assert not marker.exists()

    torch.load(path, weights_only=False)        # the payload is live: an unrestricted load runs it
    assert marker.exists()


def _drop(sd: StateDict) -> None:
    del sd["backbone.layers.1.1.1.norm2.weight"]


def _add(sd: StateDict) -> None:
    sd["backbone.layers.0.1.0.attn.extra.weight"] = torch.zeros(8)
    sd["decode_head.fusion_conv.bn.extra"] = torch.zeros(16)


def _reshape(sd: StateDict) -> None:
    sd["backbone.layers.0.1.0.norm1.weight"] = torch.zeros(9)


@pytest.mark.parametrize("mutate, expected", [
    (_drop, ["missing keys (1, named as in segpp)", "encoder.stages.1.blocks.1.norm2.weight"]),
    (_add, ["unexpected keys (2)", "backbone.layers.0.1.0.attn.extra.weight",
            "decode_head.fusion_conv.bn.extra (-> head.fuse.bn.extra)"]),
    (_reshape, ["wrong shapes (1)", "backbone.layers.0.1.0.norm1.weight (-> encoder.stages.0.blocks.0.norm1.weight)"
                " has [9], expected [8]"]),
], ids=["missing", "unexpected", "misshaped"])
def test_key_problems_are_named(tmp_path: Path, mutate: Callable[[StateDict], None], expected: list[str]) -> None:
    sd = to_mmseg(tiny().state_dict())
    mutate(sd)
    torch.save({"state_dict": sd}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "broken.pth")
    for text in expected:
        assert text in str(err.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({"variant": "b0"}, ["'b0'", "b0 (widths [32, 64, 160, 256]", "custom (widths [8, 16, 24, 32]"]),
    ({"task": "pose"}, ["'pose'", "'seg' model"]),
    ({"num_classes": 19}, ["num_classes=19", "5 outputs"]),
    ({"variant": "b9"}, ["unknown MiT variant 'b9'"]),
], ids=["variant", "task", "num_classes", "unknown-variant"])
def test_request_mismatch_names_both_values(tmp_path: Path, kwargs: dict, expected: list[str]) -> None:
    path = save_model(tiny(), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_model(path, **kwargs)
    for text in expected:
        assert text in str(err.value)


def _text_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    return tmp_path / "notes.pth"


def _unknown_layout(tmp_path: Path) -> Path:
    torch.save({"model": {"features.0.weight": torch.zeros(3)}}, tmp_path / "resnet.pth")
    return tmp_path / "resnet.pth"


def _backbone_only(tmp_path: Path) -> Path:
    encoder = {k: v for k, v in to_nvlabs(tiny(head="hf").state_dict()).items() if k.startswith("backbone.")}
    torch.save(encoder, tmp_path / "mit_b0.pth")
    return tmp_path / "mit_b0.pth"


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing.pth", "no such file or directory. Supported formats:"),
    (_text_file, "not a model checkpoint (neither safetensors nor a torch.save file). Supported formats:"),
    (_unknown_layout, "unrecognised key layout (first keys: features.0.weight). Supported formats:"),
    (_backbone_only, "only an encoder (no decode head)"),
], ids=["missing", "text", "unknown-layout", "backbone-only"])
def test_not_a_model_checkpoint(tmp_path: Path, make: Callable[[Path], Path], expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


# --- the convert CLI ---------------------------------------------------------------------------------

def test_convert_cli_mmseg_to_segpp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny(meta=SEG_META)
    src, dst = tmp_path / "segformerpp.pth", tmp_path / "segformerpp.safetensors"
    save_mmengine(src, to_mmseg(model.state_dict()), {"classes": tuple(SEG_META["classes"]),
                                                      "palette": SEG_META["palette"]})
    assert convert_main([str(src), str(dst), "--task", "seg", "--num-classes", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_model(dst)
    assert loaded.classes == SEG_META["classes"] and loaded.describe() == model.describe()
    assert_same_logits(loaded, model)

    assert convert_main([str(src), str(dst)]) == 1                        # never overwrites silently
    assert "--force" in capsys.readouterr().err
    assert convert_main([str(src), str(tmp_path / "b.safetensors"), "--task", "pose"]) == 1
    assert "'pose' was requested" in capsys.readouterr().err


def test_convert_cli_fp16_halves_the_file_and_keeps_the_logits(tmp_path: Path) -> None:
    model = tiny(meta=SEG_META)
    src = tmp_path / "segformerpp.pth"
    save_mmengine(src, to_mmseg(model.state_dict()), {"classes": tuple(SEG_META["classes"]),
                                                      "palette": SEG_META["palette"]})
    full, half = tmp_path / "fp32.safetensors", tmp_path / "fp16.safetensors"
    assert convert_main([str(src), str(full)]) == 0 and convert_main([str(src), str(half), "--fp16"]) == 0
    with safe_open(str(half), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)                               # cast back to float32 on load
    assert next(loaded.parameters()).dtype == torch.float32
    # every weight rounded to fp16 once: close to the original, not equal
    diff = (logits(loaded) - logits(model)).abs().max().item()
    assert 0 < diff <= 1e-2 * logits(model).abs().max().item()


def test_python_dash_m_runs_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "segpp_ros.cli.convert", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "segpp-convert" in result.stdout, result.stderr
