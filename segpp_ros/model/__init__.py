"""SegFormer++ in pure PyTorch: encoder, heads, token merging, checkpoint loading.

The bottom layer: imports only PyTorch (and safetensors), nothing else of segpp_ros, never
ROS. The inference core, training and the node build on it.
"""
from .checkpoint import CheckpointError, load_model, save_model
from .merge import PRESETS, STRATEGIES, MergeConfig, StageMerge, TokenMerge, resolve_merge
from .segformer import SegFormerPP, build_model, count_parameters
from .spec import EPS_FAMILIES, VARIANTS, MiTSpec, NormEps, get_spec

__all__ = [
    "CheckpointError", "load_model", "save_model",
    "PRESETS", "STRATEGIES", "MergeConfig", "StageMerge", "TokenMerge", "resolve_merge",
    "SegFormerPP", "build_model", "count_parameters",
    "EPS_FAMILIES", "VARIANTS", "MiTSpec", "NormEps", "get_spec",
]
