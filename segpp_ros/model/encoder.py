"""Mix Transformer (MiT) encoder with token merging inside attention."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .folding import Foldable
from .layout import grid_to_tokens, tokens_to_grid
from .merge import StageMerge, compute_merge
from .spec import MiTSpec, NormEps

Tensor = torch.Tensor


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample (training only)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv then LayerNorm. [B, Cin, H, W] -> [B, N, C]."""

    def __init__(self, in_dim: int, dim: int, kernel: int, stride: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(grid_to_tokens(x)), h, w


class Attention(Foldable):
    """Efficient self-attention with spatially reduced keys/values and optional token merging.

    Queries may be merged (and the output unmerged); keys/values may be merged after the
    spatial reduction. ``merge`` is runtime configuration, not a parameter. Folded for
    inference: the reduction conv's weight as the patch matmul's [C, s*s*C] matrix.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int, embed_eps: float) -> None:
        super().__init__()
        self.FOLDED = ("folded_sr_weight",) if sr_ratio > 1 else ()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.sr_norm = nn.LayerNorm(dim, eps=embed_eps)
        self.merge = StageMerge()
        self.last_token_counts: tuple[int, int] = (0, 0)   # (queries, keys) of the last call

    def reduce(self, x: Tensor, h: int, w: int) -> tuple[Tensor, int, int]:
        """Spatial reduction of keys/values: [B, h*w, C] -> normed [B, (h//s)*(w//s), C].

        A conv with kernel == stride is a linear map of non-overlapping s x s patches; as a
        patchify + matmul it runs several times faster than the convolution on CPU. Like the
        conv, it ignores the rows/columns that do not fill a whole patch.
        """
        B, _, C = x.shape
        s = self.sr_ratio
        kh, kw = h // s, w // s
        if kh == 0 or kw == 0:
            raise ValueError(f"input too small: a {h}x{w} token grid cannot be reduced by {s}x{s}; "
                             "feed images of at least 32x32 pixels")
        grid = x.view(B, h, w, C)[:, :kh * s, :kw * s]
        patches = grid.reshape(B, kh, s, kw, s, C).permute(0, 1, 3, 2, 4, 5).reshape(B, kh * kw, s * s * C)
        weight = self.folded_sr_weight if self.is_folded else self.folded()[0]
        return self.sr_norm(F.linear(patches, weight, self.sr.bias)), kh, kw

    def folded(self) -> tuple[Tensor]:
        C = self.sr.weight.shape[0]
        s = self.sr_ratio
        return (self.sr.weight.permute(0, 2, 3, 1).reshape(C, s * s * C),)   # (out, ky, kx, in)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """x: normed tokens [B, N, C] of an h x w grid -> [B, N, C]."""
        B, N, C = x.shape
        q_merge = compute_merge(x, h, w, self.merge.q)
        q_in = q_merge.merge(x)
        kv_in, kh, kw = x, h, w
        if self.sr_ratio > 1:
            kv_in, kh, kw = self.reduce(x, h, w)
        kv_in = compute_merge(kv_in, kh, kw, self.merge.kv).merge(kv_in)
        self.last_token_counts = (q_in.shape[1], kv_in.shape[1])

        head_dim = C // self.heads
        q = self.q(q_in).view(B, -1, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv(kv_in).view(B, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)                   # [B, heads, M, head_dim]
        out = self.proj(out.transpose(1, 2).reshape(B, -1, C))
        return q_merge.unmerge(out)


class MixFFN(nn.Module):
    """1x1 expand, 3x3 depthwise conv on the full grid, exact GELU, 1x1 project. [B, N, C] -> [B, N, C]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        B = x.shape[0]
        # fc1 writes channel-major [B, 4C, N] directly: the depthwise conv is ~5x faster on
        # contiguous NCHW than on channels-last, and fc2 reads it back transposed for free.
        y = torch.baddbmm(self.fc1.bias[:, None], self.fc1.weight.expand(B, -1, -1), x.transpose(1, 2))
        y = F.gelu(self.dwconv(y.view(B, -1, h, w)))
        return torch.baddbmm(self.fc2.bias, y.flatten(2).transpose(1, 2), self.fc2.weight.t().expand(B, -1, -1))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN1(x)), then x + MixFFN(LN2(x))."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, eps: NormEps,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps.block)
        self.attn = Attention(dim, heads, sr_ratio, eps.embed)
        self.norm2 = nn.LayerNorm(dim, eps=eps.block)
        self.ffn = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = drop_path

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.drop_path, self.training)
        return x + drop_path(self.ffn(self.norm2(x), h, w), self.drop_path, self.training)


class Stage(nn.Module):
    """Patch embedding, blocks, final LayerNorm. [B, Cin, H, W] -> channels-last [B, C, h, w]."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, sr_ratio: int, patch: int,
                 stride: int, mlp_ratio: int, eps: NormEps, drop_paths: list[float]) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_dim, dim, patch, stride, eps.embed)
        self.blocks = nn.ModuleList(
            Block(dim, heads, sr_ratio, mlp_ratio, eps, drop_paths[j]) for j in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps.block)

    def set_merge(self, merge: StageMerge) -> None:
        for block in self.blocks:
            block.attn.merge = merge

    def forward(self, x: Tensor) -> Tensor:
        x, h, w = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return tokens_to_grid(self.norm(x), h, w)


class MiTEncoder(nn.Module):
    """Four stages at strides 4, 8, 16, 32. [B, 3, H, W] -> list of 4 [B, C_i, ceil(H/s_i), ceil(W/s_i)]."""

    def __init__(self, spec: MiTSpec, eps: NormEps, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        rates = torch.linspace(0, drop_path_rate, sum(spec.depths)).tolist()
        in_dims = (3,) + spec.widths[:-1]
        self.stages = nn.ModuleList()
        start = 0
        for i in range(len(spec.widths)):
            self.stages.append(Stage(
                in_dims[i], spec.widths[i], spec.depths[i], spec.heads[i], spec.sr_ratios[i],
                spec.patch_sizes[i], spec.strides[i], spec.mlp_ratio, eps,
                rates[start:start + spec.depths[i]]))
            start += spec.depths[i]

    def set_merge(self, stages: tuple[StageMerge, ...]) -> None:
        for stage, merge in zip(self.stages, stages):
            stage.set_merge(merge)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
