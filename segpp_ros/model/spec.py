"""Architecture descriptions of the MiT encoder family (B0..B5) and LayerNorm eps families."""
from __future__ import annotations

from dataclasses import dataclass

NUM_STAGES = 4


@dataclass(frozen=True)
class MiTSpec:
    """Shape of a Mix Transformer encoder; every tuple has one entry per stage."""

    name: str
    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    patch_sizes: tuple[int, int, int, int] = (7, 3, 3, 3)
    strides: tuple[int, int, int, int] = (4, 2, 2, 2)
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for field in ("widths", "depths", "heads", "sr_ratios", "patch_sizes", "strides"):
            value = getattr(self, field)
            if len(value) != NUM_STAGES:
                raise ValueError(f"MiTSpec.{field} needs {NUM_STAGES} entries, got {value!r}")
        for width, heads in zip(self.widths, self.heads):
            if width % heads:
                raise ValueError(f"stage width {width} is not divisible by its {heads} heads")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "widths": list(self.widths), "depths": list(self.depths),
            "heads": list(self.heads), "sr_ratios": list(self.sr_ratios),
            "patch_sizes": list(self.patch_sizes), "strides": list(self.strides),
            "mlp_ratio": self.mlp_ratio,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "MiTSpec":
        return cls(
            name=str(d["name"]), widths=tuple(d["widths"]), depths=tuple(d["depths"]),
            heads=tuple(d.get("heads", (1, 2, 5, 8))), sr_ratios=tuple(d.get("sr_ratios", (8, 4, 2, 1))),
            patch_sizes=tuple(d.get("patch_sizes", (7, 3, 3, 3))), strides=tuple(d.get("strides", (4, 2, 2, 2))),
            mlp_ratio=int(d.get("mlp_ratio", 4)),
        )


_WIDE = (64, 128, 320, 512)
VARIANTS: dict[str, MiTSpec] = {
    "b0": MiTSpec("b0", (32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MiTSpec("b1", _WIDE, (2, 2, 2, 2)),
    "b2": MiTSpec("b2", _WIDE, (3, 4, 6, 3)),
    "b3": MiTSpec("b3", _WIDE, (3, 4, 18, 3)),
    "b4": MiTSpec("b4", _WIDE, (3, 8, 27, 3)),
    "b5": MiTSpec("b5", _WIDE, (3, 6, 40, 3)),
}


def get_spec(variant: str | MiTSpec) -> MiTSpec:
    """Resolve 'b0', 'B0', 'mit_b0' or 'mit-b0' (or pass a spec through)."""
    if isinstance(variant, MiTSpec):
        return variant
    key = str(variant).lower().replace("mit_", "").replace("mit-", "")
    if key not in VARIANTS:
        raise ValueError(f"unknown MiT variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[key]


def find_variant(widths: tuple[int, ...], depths: tuple[int, ...]) -> str | None:
    """Name of the published variant with these widths and depths, if any."""
    for name, spec in VARIANTS.items():
        if spec.widths == tuple(widths) and spec.depths == tuple(depths):
            return name
    return None


@dataclass(frozen=True)
class NormEps:
    """LayerNorm eps of a checkpoint family.

    ``block`` covers the block norms and the stage-end norms, ``embed`` the patch-embedding
    norms and the attention's spatial-reduction norm: NVlabs' release uses 1e-6 for the former
    and PyTorch's default 1e-5 for the latter, so one number cannot describe every family.
    """

    block: float
    embed: float


EPS_FAMILIES: dict[str, NormEps] = {
    "segpp": NormEps(1e-6, 1e-6),   # SegFormer++ / mmseg / mmpose releases
    "mmseg": NormEps(1e-6, 1e-6),
    "nvlabs": NormEps(1e-6, 1e-5),
    "hf": NormEps(1e-5, 1e-5),      # transformers builds every LayerNorm with torch's default
}


def hf_head_channels(spec: MiTSpec) -> int:
    """Decoder width of the HF/NVlabs all-MLP head: 256 for the narrow variants, 768 otherwise."""
    return 256 if spec.name in ("b0", "b1") else 768
