"""Load SegFormer / SegFormer++ checkpoints of every published layout; save our own format.

Reading happens in three steps, each small and replaceable:

1. *Container*: a safetensors file, a ``torch.save`` file (zip or legacy pickle) or a
   Hugging Face folder becomes a flat ``{name: tensor}`` dict plus whatever metadata the
   container carries (mmengine ``meta``, HF ``config.json``, our model description).
2. *Layout*: the key names decide which layout the tensors are in (ours, mmseg/mmpose,
   NVlabs, HF); that layout's conversion function renames (and where needed splits or joins)
   them into our parameter names.
3. *Model*: the description comes from the file when it has one (our format) and is
   otherwise inferred from tensor shapes; the caller's expectations are checked against it,
   then every key and shape is compared before a strict ``load_state_dict``.

Pickles are read with ``torch.load(weights_only=True)`` and an explicit allow-list: nothing
in a checkpoint can make us import a module or call a function outside that list.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .segformer import TASKS, SegFormerPP
from .spec import EPS_FAMILIES, NUM_STAGES, VARIANTS, MiTSpec, find_variant, get_spec

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

FORMAT_KEY = "segpp"               # safetensors metadata entry holding model.describe() as JSON
FORMAT_VERSION = "1"
SUPPORTED_FORMATS = (
    "segpp safetensors (written by save_model / segpp-convert)",
    "SegFormer++ / mmseg / mmpose .pth checkpoints (mmengine or mmcv runner files, or a bare state dict)",
    "NVlabs SegFormer .pth checkpoints with their all-MLP head",
    "Hugging Face transformers SegFormer folders (config.json + model.safetensors)",
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded; the message says why and what to do about it."""


def _supported() -> str:
    return "Supported formats: " + "; ".join(SUPPORTED_FORMATS) + "."


def _listing(items: list[str], limit: int = 12) -> str:
    """Comma-separated, capped: a broken file can miss hundreds of keys."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# --- safe unpickling --------------------------------------------------------------------------

class PickledStandIn:
    """Inert stand-in for a class a checkpoint names but we never import (mmengine's
    HistoryBuffer): it keeps the pickled state as data and has no behaviour."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


# Training-log classes mmengine pickles into ``message_hub``; we only need them not to fail.
STAND_IN_CLASSES = ("mmengine.logging.history_buffer.HistoryBuffer",)


def _numpy_globals() -> list[Any]:
    """numpy scalars, arrays and dtypes under both numpy 1.x (``numpy.core``) and 2.x
    (``numpy._core``) module names: checkpoints hold numpy scalars in their meta."""
    try:
        import numpy as np
    except ImportError:
        return []
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    entries: list[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    # Unpickling a dtype BUILDs an instance of its concrete class (Float64DType, ...).
    entries += sorted({type(np.dtype(code)) for code in np.typecodes["All"]}, key=str)
    return entries


def allowed_globals() -> list[Any]:
    """Everything besides torch's defaults that a checkpoint may name: harmless data types only."""
    return _numpy_globals() + [(PickledStandIn, name) for name in STAND_IN_CLASSES]


_REFUSED_NAME = re.compile(r"GLOBAL (\S+)|unrecognized function (\S+)|but got (<[^>]+>)")


def _refusal(error: pickle.UnpicklingError) -> CheckpointError:
    """Explain a weights-only refusal; a message without a forbidden name is plain corruption."""
    names = sorted({next(g for g in m.groups() if g) for m in _REFUSED_NAME.finditer(str(error))})
    if not names:
        return CheckpointError(f"not a readable torch checkpoint (corrupt or truncated?): {error}")
    return CheckpointError(
        f"refused to unpickle it: it references {', '.join(names)}, and unpickling that would "
        "execute code. Only tensors and a short allow-list of harmless metadata types are accepted. "
        "If you trust the file, extract its weights on a trusted machine and save them as "
        "safetensors, e.g. safetensors.torch.save_file(torch.load(f, weights_only=False)"
        "['state_dict'], 'weights.safetensors'), then load or segpp-convert that file.")


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True and our allow-list, active only for this call."""
    present = torch.serialization.get_safe_globals()
    # Entries the caller registered themselves must survive the context manager's removal.
    extra = [g for g in allowed_globals() if g not in present]
    with torch.serialization.safe_globals(extra):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise _refusal(e) from None
        except (RuntimeError, ValueError, EOFError, OSError) as e:
            raise CheckpointError(f"not a readable torch checkpoint (corrupt or truncated?): {e}") from None


# --- containers ---------------------------------------------------------------------------------

@dataclass
class RawCheckpoint:
    """Tensors as stored, plus container metadata (mmengine ``meta``, HF config, our description)."""

    tensors: StateDict
    meta: Mapping[str, Any] = field(default_factory=dict)
    hf_config: Mapping[str, Any] | None = None
    description: Mapping[str, Any] | None = None


def _sniff(path: Path) -> str | None:
    """Container kind from the first bytes, never from the file name."""
    with path.open("rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":   # torch.save zip / legacy pickle
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":                    # u64 header length, JSON header
        return "safetensors"
    return None


def _read_safetensors(path: Path) -> RawCheckpoint:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"not a valid safetensors file: {e}") from None
    description = None
    if FORMAT_KEY in meta:
        try:
            description = json.loads(meta[FORMAT_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"its '{FORMAT_KEY}' metadata is not valid JSON ({e}); re-run segpp-convert") from None
    return RawCheckpoint(tensors, description=description)


def _unwrap(obj: Any) -> RawCheckpoint:
    """Runner files keep weights under ``state_dict`` (mmengine/mmcv) or ``model``; others are bare."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"it holds a {type(obj).__name__}, not a state dict")
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError("it holds no tensors")
    if all(k.startswith("module.") for k in tensors):          # saved from a DataParallel wrapper
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return RawCheckpoint(tensors, meta)


def _read_hf_config(path: Path, required: bool) -> Mapping[str, Any] | None:
    """A SegFormer config.json, or None when the file is absent or belongs to another model.
    An unreadable one is an error only where it is ``required`` (a folder given as the path)."""
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if not required:
            return None
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    return config if isinstance(config, dict) and config.get("model_type") == "segformer" else None


def _read_hf_folder(folder: Path) -> RawCheckpoint:
    """save_pretrained output: config.json plus model.safetensors (or its shards, or pytorch_model.bin)."""
    config = _read_hf_config(folder / "config.json", required=True)
    if config is None:
        raise CheckpointError("the folder has no SegFormer config.json (model_type 'segformer')")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{index.name} is not a shard index ({type(e).__name__}: {e})") from None
        tensors = {k: v for shard in shards for k, v in _read_file(folder / shard).tensors.items()}
        return RawCheckpoint(tensors, hf_config=config)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            raw = _read_file(folder / name)
            raw.hf_config = config
            return raw
    raise CheckpointError("the folder has a config.json but no model.safetensors")


def _read_file(path: Path) -> RawCheckpoint:
    kind = _sniff(path)
    if kind is None:
        raise CheckpointError(f"not a model checkpoint (neither safetensors nor a torch.save file). {_supported()}")
    return _read_safetensors(path) if kind == "safetensors" else _unwrap(_torch_load(path))


def read_checkpoint(path: Path) -> RawCheckpoint:
    """Any supported container -> RawCheckpoint. A weights file inside an HF folder gets its config."""
    if not path.exists():
        raise CheckpointError(f"no such file or directory. {_supported()}")
    if path.is_dir():
        return _read_hf_folder(path)
    raw = _read_file(path)
    if raw.hf_config is None:
        raw.hf_config = _read_hf_config(path.parent / "config.json", required=False)
    return raw


# --- layouts: key conversion into our parameter names ------------------------------------------

@dataclass
class Converted:
    """Tensors under our names; ``origin`` maps each back to the file's key(s) for messages."""

    tensors: StateDict = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)     # file keys no rule of the layout knows
    task: str | None = None                                 # None: the keys cannot tell seg from pose

    def put(self, key: str, tensor: Tensor, source: str) -> None:
        self.tensors[key] = tensor
        self.origin[key] = source

    def pop(self, key: str) -> tuple[Tensor, str]:
        return self.tensors.pop(key), self.origin.pop(key)


@dataclass(frozen=True)
class Rule:
    """``pattern`` (full match) -> ``target`` (str.format over its named groups, or None: a known
    key we deliberately drop). Group ``s`` is a stage index and is rebased to 0."""

    pattern: re.Pattern[str]
    target: str | None
    transform: Callable[[Tensor], Tensor] | None = None


def _rules(prefix: str, dst: str | None, pairs: Iterable[tuple[str, str]],
           transform: Callable[[Tensor], Tensor] | None = None) -> list[Rule]:
    """One rule per module: ``{prefix}{src}.{param}`` -> ``{dst}{ours}.{param}`` (an empty module
    name stands for the prefix itself). ``dst`` None drops the keys."""
    def module(name: str, sep: str) -> str:
        return name + sep if name else ""

    return [Rule(re.compile(prefix + module(re.escape(src), r"\.") + r"(?P<p>\w+)"),
                 None if dst is None else dst + module(ours, ".") + "{p}", transform) for src, ours in pairs]


def _rename(sd: Mapping[str, Tensor], rules: list[Rule], stage_base: int = 0) -> Converted:
    conv = Converted()
    for key, tensor in sd.items():
        for rule in rules:
            m = rule.pattern.fullmatch(key)
            if m:
                break
        else:
            conv.unmatched.append(key)
            continue
        if rule.target is None:
            continue
        groups = m.groupdict()
        if "s" in groups:
            groups["s"] = int(groups["s"]) - stage_base
        conv.put(rule.target.format(**groups), rule.transform(tensor) if rule.transform else tensor, key)
    return conv


def _flatten_1x1(t: Tensor) -> Tensor:
    """[out, in, 1, 1] conv weight -> [out, in] Linear weight; anything else is left for the shape check."""
    return t.flatten(1) if t.ndim == 4 and t.shape[2:] == (1, 1) else t


def _split_in_proj(conv: Converted) -> None:
    """mmcv's MultiheadAttention stacks q, k, v: in_proj [3C, ...] -> q [C, ...], kv [2C, ...] (k, then v)."""
    for key in [k for k in conv.tensors if ".attn.in_proj." in k]:
        if conv.tensors[key].shape[0] % 3:
            continue                                    # stays unknown: reported as unexpected
        tensor, source = conv.pop(key)
        c = tensor.shape[0] // 3
        conv.put(key.replace(".in_proj.", ".q."), tensor[:c], source)
        conv.put(key.replace(".in_proj.", ".kv."), tensor[c:], source)


def _join_kv(conv: Converted) -> None:
    """HF keeps key and value projections apart; our kv stacks the k rows, then the v rows."""
    for key in [k for k in conv.tensors if ".attn.k." in k]:
        vkey = key.replace(".attn.k.", ".attn.v.")
        if vkey not in conv.tensors or conv.tensors[key].shape[1:] != conv.tensors[vkey].shape[1:]:
            continue                                    # a lone half is reported as unexpected
        (k, ksrc), (v, vsrc) = conv.pop(key), conv.pop(vkey)
        conv.put(key.replace(".attn.k.", ".attn.kv."), torch.cat([k, v]), f"{ksrc} + {vsrc}")


_STAGE = "encoder.stages.{s}."
_BLOCK = "encoder.stages.{s}.blocks.{b}."

_MMSEG_RULES = [
    *_rules(r"backbone\.layers\.(?P<s>\d+)\.0\.", _STAGE, [("projection", "patch_embed.proj"),
                                                         ("norm", "patch_embed.norm")]),
    Rule(re.compile(r"backbone\.layers\.(?P<s>\d+)\.1\.(?P<b>\d+)\.attn\.attn\.in_proj_(?P<p>weight|bias)"),
         _BLOCK + "attn.in_proj.{p}"),
    *_rules(r"backbone\.layers\.(?P<s>\d+)\.1\.(?P<b>\d+)\.", _BLOCK, [
        ("norm1", "norm1"), ("norm2", "norm2"), ("attn.attn.out_proj", "attn.proj"), ("attn.sr", "attn.sr"),
        ("attn.norm", "attn.sr_norm"), ("ffn.layers.1", "ffn.dwconv")]),
    *_rules(r"backbone\.layers\.(?P<s>\d+)\.1\.(?P<b>\d+)\.", _BLOCK,
            [("ffn.layers.0", "ffn.fc1"), ("ffn.layers.4", "ffn.fc2")], _flatten_1x1),
    *_rules(r"backbone\.layers\.(?P<s>\d+)\.", _STAGE, [("2", "norm")]),
    # mmseg names the head decode_head, mmpose names it head (and its classifier final_layer)
    *_rules(r"(?:decode_head|head)\.convs\.(?P<k>\d+)\.", "head.convs.{k}.", [("conv", "conv"), ("bn", "bn")]),
    *_rules(r"(?:decode_head|head)\.", "head.", [("fusion_conv.conv", "fuse.conv"), ("fusion_conv.bn", "fuse.bn"),
                                                  ("conv_seg", "classifier"), ("final_layer", "classifier")]),
]

_NV = r"(?:backbone\.)?"
_NVLABS_RULES = [
    *_rules(rf"{_NV}patch_embed(?P<s>\d)\.", _STAGE, [("proj", "patch_embed.proj"), ("norm", "patch_embed.norm")]),
    *_rules(rf"{_NV}block(?P<s>\d)\.(?P<b>\d+)\.", _BLOCK, [
        ("norm1", "norm1"), ("norm2", "norm2"), ("attn.q", "attn.q"), ("attn.kv", "attn.kv"),
        ("attn.proj", "attn.proj"), ("attn.sr", "attn.sr"), ("attn.norm", "attn.sr_norm"),
        ("mlp.fc1", "ffn.fc1"), ("mlp.dwconv.dwconv", "ffn.dwconv"), ("mlp.fc2", "ffn.fc2")]),
    Rule(re.compile(rf"{_NV}norm(?P<s>\d)\.(?P<p>\w+)"), _STAGE + "norm.{p}"),
    *_rules(r"decode_head\.linear_c(?P<s>\d)\.", "head.linear_c.{s}.", [("proj", "")]),
    *_rules(r"decode_head\.", "head.", [("linear_fuse.conv", "fuse"), ("linear_fuse.bn", "bn"),
                                        ("linear_pred", "classifier")]),
    # Known but unused: mmseg's BaseDecodeHead builds conv_seg even though SegFormerHead predicts
    # with linear_pred; ImageNet-pretrained backbones carry their classification head.
    *_rules(r"decode_head\.", None, [("conv_seg", "")]),
    *_rules(_NV, None, [("head", "")]),
]

_HF_ENC = r"(?:segformer\.)?encoder\."
_HF_RULES = [
    *_rules(rf"{_HF_ENC}patch_embeddings\.(?P<s>\d+)\.", _STAGE, [("proj", "patch_embed.proj"),
                                                                 ("layer_norm", "patch_embed.norm")]),
    *_rules(rf"{_HF_ENC}block\.(?P<s>\d+)\.(?P<b>\d+)\.", _BLOCK, [
        ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("attention.self.query", "attn.q"),
        ("attention.self.key", "attn.k"), ("attention.self.value", "attn.v"), ("attention.self.sr", "attn.sr"),
        ("attention.self.layer_norm", "attn.sr_norm"), ("attention.output.dense", "attn.proj"),
        ("mlp.dense1", "ffn.fc1"), ("mlp.dwconv.dwconv", "ffn.dwconv"), ("mlp.dense2", "ffn.fc2")]),
    *_rules(rf"{_HF_ENC}layer_norm\.(?P<s>\d+)\.", _STAGE, [("", "norm")]),
    *_rules(r"decode_head\.linear_c\.(?P<s>\d+)\.", "head.linear_c.{s}.", [("proj", "")]),
    *_rules(r"decode_head\.", "head.", [("linear_fuse", "fuse"), ("batch_norm", "bn"), ("classifier", "classifier")]),
]


def convert_ours(sd: Mapping[str, Tensor]) -> Converted:
    return _rename(sd, [Rule(re.compile(r"(?P<k>.+)"), "{k}")])


def convert_mmseg(sd: Mapping[str, Tensor]) -> Converted:
    """SegFormer++ / mmseg / mmpose (mmengine MixVisionTransformer) keys -> ours."""
    conv = _rename(sd, _MMSEG_RULES)
    _split_in_proj(conv)
    conv.task = "pose" if any(k.startswith("head.final_layer.") for k in sd) else "seg"
    return conv


def convert_nvlabs(sd: Mapping[str, Tensor]) -> Converted:
    """NVlabs' original keys (1-based stage numbers, Linear MLPs) -> ours with the 'hf' head."""
    conv = _rename(sd, _NVLABS_RULES, stage_base=1)
    conv.task = "seg"
    return conv


def convert_hf(sd: Mapping[str, Tensor]) -> Converted:
    """Hugging Face on-disk keys (as save_pretrained writes them) -> ours with the 'hf' head."""
    conv = _rename(sd, _HF_RULES)
    _join_kv(conv)
    conv.task = "seg"
    return conv


@dataclass(frozen=True)
class Layout:
    name: str
    marker: re.Pattern[str]           # a key that only this layout has
    convert: Callable[[Mapping[str, Tensor]], Converted]
    eps_family: str | None            # None: decided by the head type (our own files)


LAYOUTS = (
    Layout("segpp", re.compile(r"encoder\.stages\.\d+\."), convert_ours, None),
    Layout("mmseg", re.compile(r"backbone\.layers\.\d+\."), convert_mmseg, "mmseg"),
    Layout("nvlabs", re.compile(rf"{_NV}(patch_embed|block)\d"), convert_nvlabs, "nvlabs"),
    Layout("hf", re.compile(rf"{_HF_ENC}(patch_embeddings|block)\."), convert_hf, "hf"),
)


def detect_layout(keys: Iterable[str]) -> Layout:
    keys = list(keys)
    for layout in LAYOUTS:
        if any(layout.marker.match(k) for k in keys):
            return layout
    raise CheckpointError(f"unrecognised key layout (first keys: {_listing(sorted(keys), 5)}). {_supported()}")


# --- inferring the model description ------------------------------------------------------------

def _shape(t: StateDict, key: str, why: str) -> tuple[int, ...]:
    if key not in t:
        raise CheckpointError(f"missing {key} (needed to infer {why})")
    return tuple(t[key].shape)


def _depth(t: StateDict, stage: int) -> int:
    pattern = re.compile(rf"encoder\.stages\.{stage}\.blocks\.(\d+)\.")
    found = [int(m.group(1)) for m in map(pattern.match, t) if m]
    if not found:
        raise CheckpointError(f"stage {stage} has no blocks")
    return max(found) + 1


def _spec_from_hf_config(config: Mapping[str, Any], name: str) -> MiTSpec:
    ratios = set(config.get("mlp_ratios", [4]))
    if len(ratios) != 1 or config.get("num_channels", 3) != 3:
        raise CheckpointError("config.json describes a SegFormer this package cannot build "
                              f"(mlp_ratios {config.get('mlp_ratios')}, num_channels {config.get('num_channels')})")
    try:
        return MiTSpec.from_dict({
            "name": name, "widths": config["hidden_sizes"], "depths": config["depths"],
            "heads": config["num_attention_heads"], "sr_ratios": config["sr_ratios"],
            "patch_sizes": config["patch_sizes"], "strides": config["strides"], "mlp_ratio": ratios.pop()})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"config.json does not describe a MiT encoder ({type(e).__name__}: {e})") from None


def infer_spec(t: StateDict, hf_config: Mapping[str, Any] | None = None) -> MiTSpec:
    """MiT shape from our-named tensors (patch embed [C, Cin, k, k], sr [C, C, s, s], fc1 [rC, C]).

    A published variant's exact spec wins (so a deviating file fails the shape check instead of
    building a deviating model); otherwise heads follow MiT's constant head dim (= stage-1 width).
    """
    widths, depths, patches, srs = [], [], [], []
    for i in range(NUM_STAGES):
        width, _, patch, _ = _shape(t, f"encoder.stages.{i}.patch_embed.proj.weight", "the stage widths")
        widths.append(width)
        patches.append(patch)
        depths.append(_depth(t, i))
        sr = t.get(f"encoder.stages.{i}.blocks.0.attn.sr.weight")
        srs.append(sr.shape[-1] if sr is not None else 1)
    name = find_variant(tuple(widths), tuple(depths)) or "custom"
    if hf_config is not None:
        return _spec_from_hf_config(hf_config, name)
    if name != "custom":
        return VARIANTS[name]
    if any(w % widths[0] for w in widths):
        raise CheckpointError(f"cannot infer attention heads for widths {widths}; convert from a file with a config")
    hidden = _shape(t, "encoder.stages.0.blocks.0.ffn.fc1.weight", "the MLP ratio")[0]
    return MiTSpec(name, tuple(widths), tuple(depths), tuple(w // widths[0] for w in widths), tuple(srs),
                   tuple(patches), mlp_ratio=hidden // widths[0])


def _head_type(t: StateDict) -> str:
    if "head.linear_c.0.weight" in t:
        return "hf"
    if "head.convs.0.conv.weight" in t:
        return "mmseg"
    raise CheckpointError("it holds only an encoder (no decode head), e.g. an ImageNet-pretrained backbone; "
                          "load a checkpoint trained for segmentation or pose")


def _plain_pairs(pairs: Any) -> list[list[int]]:
    return [[int(v) for v in pair] for pair in pairs]


def _meta_from_mm(meta: Mapping[str, Any], task: str) -> dict[str, Any]:
    """Class names / palette (mmseg) or keypoint names / skeleton / flips (mmpose) from runner meta.

    mmengine keeps them in ``meta['dataset_meta']``, older mmcv runners in ``meta['CLASSES']`` /
    ``meta['PALETTE']``; values may be tuples or numpy arrays, so they are made plain JSON here.
    """
    dm = meta.get("dataset_meta") or {}

    def get(key: str, legacy: str = "") -> Any:
        value = dm.get(key)
        return meta.get(legacy) if value is None and legacy else value

    if task == "pose":
        names, skeleton, flips = get("keypoint_id2name"), get("skeleton_links"), get("flip_pairs")
        out = {"keypoints": [str(names[k]) for k in sorted(names, key=int)]} if names else {}
        out.update({key: _plain_pairs(v) for key, v in (("skeleton", skeleton), ("flip_pairs", flips))
                    if v is not None})
        return out
    classes, palette = get("classes", "CLASSES"), get("palette", "PALETTE")
    out = {"classes": [str(c) for c in classes]} if classes is not None else {}
    if palette is not None:
        out["palette"] = _plain_pairs(palette)
    return out


def _meta_from_hf(config: Mapping[str, Any] | None) -> dict[str, Any]:
    labels = (config or {}).get("id2label") or {}
    return {"classes": [str(labels[k]) for k in sorted(labels, key=int)]} if labels else {}


def _drop_inconsistent_meta(meta: dict[str, Any], num_outputs: int) -> dict[str, Any]:
    """Names must index the outputs; a list of another length is metadata we cannot trust."""
    for key in ("classes", "keypoints"):
        if key in meta and len(meta[key]) != num_outputs:
            warnings.warn(f"ignoring {len(meta[key])} {key} in the checkpoint: the model has {num_outputs} outputs")
            del meta[key]
    return meta


def infer_description(conv: Converted, layout: Layout, raw: RawCheckpoint,
                      task_hint: str | None = None) -> dict[str, Any]:
    """SegFormerPP.describe()-style dict for a file that does not carry one. ``task_hint`` decides
    only where the keys cannot (a bare state dict in our names); it defaults to 'seg'."""
    t = conv.tensors
    task = conv.task or task_hint or "seg"
    head = _head_type(t)
    num_outputs, head_channels = _shape(t, "head.classifier.weight", "the number of outputs")[:2]
    family = layout.eps_family or ("hf" if head == "hf" else "segpp")
    eps = EPS_FAMILIES[family]
    meta = _meta_from_hf(raw.hf_config) if layout.name == "hf" else _meta_from_mm(raw.meta, task)
    return {"spec": infer_spec(t, raw.hf_config if layout.name == "hf" else None).to_dict(),
            "task": task, "num_outputs": num_outputs, "head": head, "head_channels": head_channels,
            "eps": {"block": eps.block, "embed": eps.embed}, "meta": _drop_inconsistent_meta(meta, num_outputs)}


# --- checks -----------------------------------------------------------------------------------------

def _spec_summary(spec: MiTSpec) -> str:
    return f"{spec.name} (widths {list(spec.widths)}, depths {list(spec.depths)})"


def build_described(desc: Mapping[str, Any]) -> SegFormerPP:
    """The (randomly initialised) model a description names; a broken description is a CheckpointError."""
    try:
        return SegFormerPP.from_description(desc)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"its model description is inconsistent ({type(e).__name__}: {e}); "
                              "re-create the file with segpp-convert") from None


def check_request(model: SegFormerPP, variant: str | MiTSpec | None, task: str | None,
                  num_classes: int | None) -> None:
    """What the caller asked for must be what the file holds: never rebuild a different model."""
    if variant is not None:
        try:
            wanted = get_spec(variant)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        if replace(wanted, name=model.spec.name) != model.spec:      # names differ freely ('custom', 'b0')
            raise CheckpointError(f"variant {variant!r} was requested, i.e. {_spec_summary(wanted)}, but the "
                                  f"checkpoint holds {_spec_summary(model.spec)}")
    if task is not None and task not in TASKS:
        raise CheckpointError(f"task must be one of {TASKS}, got {task!r}")
    if task is not None and task != model.task:
        raise CheckpointError(f"task {task!r} was requested, but the checkpoint holds a {model.task!r} model")
    if num_classes is not None and num_classes != model.num_outputs:
        what = "keypoints" if model.task == "pose" else "classes"
        raise CheckpointError(f"num_classes={num_classes} was requested, but the checkpoint's head has "
                              f"{model.num_outputs} outputs ({what})")


def check_keys(model: SegFormerPP, conv: Converted, layout: Layout) -> None:
    """Every parameter present with its shape, nothing extra; names in both layouts where they differ."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def named(key: str) -> str:
        source = conv.origin.get(key, key)
        return key if source == key else f"{source} (-> {key})"

    missing = sorted(expected.keys() - conv.tensors.keys())
    unexpected = sorted(conv.unmatched) + sorted(named(k) for k in conv.tensors.keys() - expected.keys())
    misshaped = [f"{named(k)} has {list(conv.tensors[k].shape)}, expected {list(shape)}"
                 for k, shape in sorted(expected.items())
                 if k in conv.tensors and tuple(conv.tensors[k].shape) != shape]
    # Missing keys exist only in our naming; say so when the file uses another.
    in_our_names = "" if layout.name == "segpp" else ", named as in segpp"
    problems = [f"{label} ({len(items)}{note}): {_listing(items)}" for label, items, note in
                (("missing keys", missing, in_our_names), ("unexpected keys", unexpected, ""),
                 ("wrong shapes", misshaped, "")) if items]
    if problems:
        raise CheckpointError(f"its {layout.name}-layout weights do not fit a {_spec_summary(model.spec)} "
                              f"{model.task} model: " + "; ".join(problems))


# --- public API ---------------------------------------------------------------------------------

def load_model(path: str | os.PathLike, variant: str | MiTSpec | None = None, task: str | None = None,
               num_classes: int | None = None, *, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> SegFormerPP:
    """Load any supported checkpoint (see SUPPORTED_FORMATS) as a SegFormerPP in eval mode.

    variant / task / num_classes are checks, not overrides: when given they must match what the
    file holds. Raises CheckpointError (naming the path) for anything that does not load exactly.
    """
    path = Path(path)
    try:
        raw = read_checkpoint(path)
        layout = detect_layout(raw.tensors)
        conv = layout.convert(raw.tensors)
        desc = raw.description if raw.description is not None else infer_description(conv, layout, raw, task)
        model = build_described(desc)
        check_request(model, variant, task, num_classes)
        check_keys(model, conv, layout)
        model.load_state_dict(conv.tensors, strict=True)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model.to(device=device, dtype=dtype).eval()


def save_model(model: SegFormerPP, path: str | os.PathLike, *, fp16: bool = False) -> Path:
    """Write our format: safetensors in our key names, model.describe() as JSON metadata.

    fp16 halves the file (floating tensors stored as float16; load_model casts them back to the
    requested dtype). Written to a temporary file first, so a crash never leaves half a model.
    """
    from safetensors.torch import save_file

    try:
        description = json.dumps(model.describe())
    except TypeError as e:
        raise CheckpointError(f"model.meta must be JSON-serialisable to be saved: {e}") from None
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        tensors[key] = (value.half() if fp16 and value.is_floating_point() else value).contiguous()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={FORMAT_KEY: description, "segpp_format": FORMAT_VERSION})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp creates 0600; a model file is ordinary data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
