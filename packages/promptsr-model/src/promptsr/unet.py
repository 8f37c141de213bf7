"""The PromptSR denoising network (DN, paper 3.2 and 4.1.3): a text-conditioned U-Net.

Input: the noisy HR image and the bicubic-upsampled LR image (`condition`), which the network concatenates
(6 channels, [-1, 1]), a diffusion timestep per sample and the prompt's token embeddings; output: the
predicted quantity (noise, x0 or v: the network knows only its 3 channels).
Text enters only through cross-attention (queries from image features, keys/values from the text); there
is no self-attention unless a level asks for it. The network knows nothing of the noise schedule.

Layout (guided-diffusion / SR3 lineage, which the paper builds on):

    conv_in -> per level: num_res_blocks ResNet blocks, then [self-attention], [cross-attention]; a strided
    conv between levels -> middle: ResNet, [self-attention], [cross-attention], ResNet -> per level, deepest
    first: num_res_blocks + 1 ResNet blocks, each fed one encoder skip (concatenated), then [self-attention],
    [cross-attention]; nearest 2x + conv between levels -> GroupNorm, SiLU, conv_out.

The decoder has one ResNet block more per level than the encoder because it also takes the skips of
conv_in and of each downsampling conv (as guided-diffusion and SR3 do); "two ResNet blocks and one
cross-attention block per level" (paper 4.1.3) describes the encoder levels.

Attention runs through `F.scaled_dot_product_attention` with `attention_head_dim`-wide heads. Everything is
shape-static (no Python branching on tensor values), so `torch.compile`, channels_last and bf16 autocast
apply without changes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .presets import PRESETS

__all__ = ["PRESETS", "PromptSRUNet", "build_unet", "count_parameters"]


def _zero(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: a residual branch then starts as the identity (guided-diffusion's
    trick), so attention and ResNet branches grow in from a working plain network."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the timestep followed by a two-layer MLP.

    (B,) timesteps (int or float, in schedule steps, e.g. 0..1999) -> (B, embed_dim).
    """

    def __init__(self, freq_dim: int, embed_dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if freq_dim % 2:
            raise ValueError(f"the sinusoidal timestep features need an even width, got {freq_dim}")
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        # Built in float32 on every call (not a buffer) so model.to(bfloat16) cannot round the phases:
        # t * freq reaches ~2000 rad, far beyond bf16's 8 bits of mantissa.
        freqs = torch.exp(
            -math.log(self.max_period) * torch.arange(half, device=timestep.device, dtype=torch.float32) / half
        )
        angles = timestep.float()[:, None] * freqs[None, :]
        feats = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, + timestep embedding, GroupNorm, SiLU, dropout, 3x3 conv, residual.

    (B, in_ch, H, W), (B, temb_dim) -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # A 1x1 conv only where the width changes (decoder blocks, first block of a level).
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def _num_heads(channels: int, head_dim: int) -> int:
    """Heads of `head_dim` channels; a layer narrower than one head gets a single head of all its channels."""
    return max(1, channels // head_dim)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C). permute+reshape, not flatten+transpose: a view for channels_last input."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _from_tokens(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W), channels_last-strided (no copy)."""
    return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, heads, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, heads * d)


class CrossAttention(nn.Module):
    """Image features attend to the text tokens; residual, output projection zero-initialised.

    x (B, C, H, W); context (B, L, context_dim); attn_mask (B, 1, 1, L) bool, True = attend, or None;
    keep (B, 1, 1) in x's dtype (0 for a sample without any attendable token), or None -> (B, C, H, W).
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.heads = _num_heads(channels, head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        # The text embeddings come out of the encoder's final LayerNorm: no second norm on them.
        self.to_kv = nn.Linear(context_dim, 2 * channels, bias=False)
        self.to_out = _zero(nn.Linear(channels, channels))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        attn_mask: torch.Tensor | None,
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        _, _, h, w = x.shape
        q = _split_heads(self.to_q(_to_tokens(self.norm(x))), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(context).chunk(2, dim=-1))
        out = self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))
        if keep is not None:
            out = out * keep.to(out.dtype)
        return x + _from_tokens(out, h, w)


class SelfAttention(nn.Module):
    """Every pixel attends to every pixel (off by default: quadratic in H*W); residual, zero-initialised.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.heads = _num_heads(channels, head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = _zero(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(_to_tokens(self.norm(x))).chunk(3, dim=-1))
        out = self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return x + _from_tokens(out, h, w)


class Attention(nn.Module):
    """The attention of one level: optional self-attention, then optional cross-attention (B, C, H, W)."""

    def __init__(
        self, channels: int, context_dim: int, head_dim: int, groups: int, self_attn: bool, cross_attn: bool
    ) -> None:
        super().__init__()
        self.self_attn = SelfAttention(channels, head_dim, groups) if self_attn else None
        self.cross_attn = CrossAttention(channels, context_dim, head_dim, groups) if cross_attn else None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, attn_mask: torch.Tensor | None, keep: torch.Tensor | None
    ) -> torch.Tensor:
        if self.self_attn is not None:
            x = self.self_attn(x)
        if self.cross_attn is not None:
            x = self.cross_attn(x, context, attn_mask, keep)
        return x


class Downsample(nn.Module):
    """3x3 conv with stride 2: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest 2x then a 3x3 conv (no checkerboard of transposed convs): (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownLevel(nn.Module):
    """One encoder level: ResNet blocks, the level's attention after the last one, then downsampling.

    Pushes every block's output (and the downsampled map) onto `skips` for the decoder.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        num_res_blocks: int,
        temb_dim: int,
        attention: Attention,
        groups: int,
        dropout: float,
        downsample: bool,
    ) -> None:
        super().__init__()
        chans = [in_ch] + [out_ch] * num_res_blocks
        self.res = nn.ModuleList(ResBlock(chans[i], out_ch, temb_dim, groups, dropout) for i in range(num_res_blocks))
        self.attn = attention
        self.downsample = Downsample(out_ch) if downsample else None

    def forward(
        self,
        h: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        attn_mask: torch.Tensor | None,
        keep: torch.Tensor | None,
        skips: list[torch.Tensor],
    ) -> torch.Tensor:
        last = len(self.res) - 1
        for i, block in enumerate(self.res):
            h = block(h, temb)
            if i == last:
                h = self.attn(h, context, attn_mask, keep)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)
            skips.append(h)
        return h


class UpLevel(nn.Module):
    """One decoder level: ResNet blocks each fed one skip (concatenated), the level's attention, upsampling."""

    def __init__(
        self,
        in_ch: int,
        skip_chs: Sequence[int],
        out_ch: int,
        temb_dim: int,
        attention: Attention,
        groups: int,
        dropout: float,
        upsample: bool,
    ) -> None:
        super().__init__()
        blocks, ch = [], in_ch
        for skip_ch in skip_chs:
            blocks.append(ResBlock(ch + skip_ch, out_ch, temb_dim, groups, dropout))
            ch = out_ch
        self.res = nn.ModuleList(blocks)
        self.attn = attention
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(
        self,
        h: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        attn_mask: torch.Tensor | None,
        keep: torch.Tensor | None,
        skips: list[torch.Tensor],
    ) -> torch.Tensor:
        for block in self.res:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        h = self.attn(h, context, attn_mask, keep)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class MidBlock(nn.Module):
    """ResNet, attention, ResNet at the lowest resolution: (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int, temb_dim: int, attention: Attention, groups: int, dropout: float) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, channels, temb_dim, groups, dropout)
        self.attn = attention
        self.res2 = ResBlock(channels, channels, temb_dim, groups, dropout)

    def forward(
        self,
        h: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        attn_mask: torch.Tensor | None,
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.res2(self.attn(self.res1(h, temb), context, attn_mask, keep), temb)


def _per_level(name: str, value: bool | Sequence[bool], levels: int) -> tuple[bool, ...]:
    """A per-level flag tuple; one bool applies to every level."""
    if isinstance(value, bool):
        return (value,) * levels
    flags = tuple(bool(v) for v in value)
    if len(flags) != levels:
        raise ValueError(f"{name} has {len(flags)} entries but channel_mult has {levels} levels")
    return flags


class PromptSRUNet(ModelMixin, ConfigMixin):
    """The PromptSR denoiser. See the module docstring for the layout.

    Config (all saved to config.json by `save_pretrained`):
        in_channels: noisy HR (3) + bicubic-upsampled LR (3).
        out_channels: the predicted noise (3).
        base_channels: width of the first level; level i has base_channels * channel_mult[i] channels.
        channel_mult: one multiplier per level; len(channel_mult) = number of levels (resolutions).
        num_res_blocks: ResNet blocks per encoder level (the decoder has one more per level).
        cross_attention_levels: per level (or one bool for all): a cross-attention block to the text.
        self_attention_levels: per level (or one bool for all): a self-attention block before it.
        mid_cross_attention, mid_self_attention: the same for the middle block.
        attention_head_dim: channels per attention head; a level has channels // attention_head_dim heads
            (one head if narrower than a head). 64 = 1/2/4/8 heads for the paper's widths.
        cross_attention_dim: width D of the text embeddings (768 for CLIP ViT-L/14, 384 for MiniLM).
        norm_groups: GroupNorm groups; every level width must be divisible by it.
        dropout: dropout inside the ResNet blocks (before their second conv).
        time_embed_dim: width of the timestep embedding MLP; None = 4 * base_channels.
        text_encoder: id of the text encoder the embeddings must come from (recorded for the pipeline,
            which refuses others; forward only checks the width D).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        cross_attention_levels: bool | Sequence[bool] = (True, True, True, True),
        self_attention_levels: bool | Sequence[bool] = (False, False, False, False),
        mid_cross_attention: bool = True,
        mid_self_attention: bool = False,
        attention_head_dim: int = 64,
        cross_attention_dim: int = 768,
        norm_groups: int = 32,
        dropout: float = 0.0,
        time_embed_dim: int | None = None,
        text_encoder: str | None = None,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        if levels < 1 or num_res_blocks < 1 or base_channels < 1 or attention_head_dim < 1:
            raise ValueError(
                "channel_mult needs at least one level and num_res_blocks, base_channels and attention_head_dim"
                f" must be >= 1 (got {tuple(channel_mult)}, {num_res_blocks}, {base_channels}, {attention_head_dim})"
            )
        chans = [base_channels * int(m) for m in channel_mult]
        for ch in chans:
            if ch % norm_groups:
                raise ValueError(f"level width {ch} is not divisible by norm_groups={norm_groups}")
            if ch % _num_heads(ch, attention_head_dim):
                raise ValueError(f"level width {ch} is not divisible into heads of {attention_head_dim} channels")
        cross = _per_level("cross_attention_levels", cross_attention_levels, levels)
        selfa = _per_level("self_attention_levels", self_attention_levels, levels)
        temb_dim = time_embed_dim or 4 * base_channels
        self.levels = levels

        def attention(ch: int, self_attn: bool, cross_attn: bool) -> Attention:
            return Attention(ch, cross_attention_dim, attention_head_dim, norm_groups, self_attn, cross_attn)

        self.time_embed = TimestepEmbedding(base_channels, temb_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        skip_chs, ch = [base_channels], base_channels
        self.down = nn.ModuleList()
        for i, out_ch in enumerate(chans):
            last = i == levels - 1
            att = attention(out_ch, selfa[i], cross[i])
            self.down.append(DownLevel(ch, out_ch, num_res_blocks, temb_dim, att, norm_groups, dropout, not last))
            ch = out_ch
            skip_chs += [ch] * (num_res_blocks + (0 if last else 1))

        self.mid = MidBlock(ch, temb_dim, attention(ch, mid_self_attention, mid_cross_attention), norm_groups, dropout)

        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            taken = [skip_chs.pop() for _ in range(num_res_blocks + 1)]
            att = attention(chans[i], selfa[i], cross[i])
            self.up.append(UpLevel(ch, taken, chans[i], temb_dim, att, norm_groups, dropout, i > 0))
            ch = chans[i]
        assert not skip_chs, "every encoder skip has a decoder block"

        self.norm_out = nn.GroupNorm(norm_groups, ch)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: 2 ** (levels - 1)."""
        return 2 ** (self.levels - 1)

    def _check_inputs(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        cfg = self.config
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:  # after the concatenation
            raise ValueError(f"sample must be (B, {cfg.in_channels}, H, W), got {tuple(sample.shape)}")
        b, _, h, w = sample.shape
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of {m} (2^(levels-1) for {self.levels} levels):"
                " pad or tile it to a multiple first"
            )
        if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] != b):
            raise ValueError(f"timestep must be a scalar or ({b},), got {tuple(timestep.shape)}")
        if context.ndim != 3 or context.shape[0] != b or context.shape[1] < 1:
            raise ValueError(f"encoder_hidden_states must be ({b}, L>=1, D), got {tuple(context.shape)}")
        if context.shape[2] != cfg.cross_attention_dim:
            raise ValueError(
                f"text embeddings are {context.shape[2]}-d but this model expects {cfg.cross_attention_dim}-d"
                f" (trained with text encoder {cfg.text_encoder or 'unrecorded'}): embed with the same encoder"
            )
        if mask is not None and tuple(mask.shape) != tuple(context.shape[:2]):
            raise ValueError(f"encoder_attention_mask must be {tuple(context.shape[:2])}, got {tuple(mask.shape)}")

    def concat_condition(self, sample: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The network's input: the noisy image `sample` (B, 3, H, W) then `condition` (B, 3, H, W), the LR
        image upsampled to the HR size; ValueError when their shapes do not fit the model."""
        want = self.config.in_channels - self.config.out_channels
        if condition.ndim != 4 or condition.shape[1] != want:
            raise ValueError(
                f"condition must be (B, {want}, H, W), the upsampled LR image, got {tuple(condition.shape)}"
            )
        if sample.ndim != 4 or sample.shape[0] != condition.shape[0] or sample.shape[2:] != condition.shape[2:]:
            raise ValueError(
                f"condition {tuple(condition.shape)} does not match sample {tuple(sample.shape)}: upsample the LR"
                " image to the HR size (bicubic, x scale) first"
            )
        return torch.cat([sample, condition.to(sample.dtype)], dim=1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the target (noise, x0 or v, as trained) for `sample`.

        sample: (B, 3, H, W), the noisy HR image (or residual), in [-1, 1], with `condition`; H and W
            multiples of `size_multiple` (8 for 4 levels), else ValueError. Without `condition`, the
            concatenation already made: (B, in_channels, H, W), noisy HR (3) then upsampled LR (3).
        condition: (B, 3, H, W), the LR image upsampled (bicubic) to the HR size, in [-1, 1]; the network
            concatenates it to `sample` in channels (SR3, paper 3.2), cast to `sample`'s dtype.
        timestep: (B,) or scalar, int or float, in schedule steps (0..T-1); a scalar applies to every sample.
            Under torch.compile pass a tensor: Python numbers are specialised on and recompile per value.
        encoder_hidden_states: (B, L, cross_attention_dim) text token embeddings, any float dtype (cast
            to the weights' dtype here, so float16 embeddings from shards can go in as they are).
        encoder_attention_mask: (B, L), True (or 1) = attend, False (or 0) = padding; None = attend to all.
            A sample whose row is all False gets no text at all: its cross-attention adds exactly zero
            (instead of SDPA's NaN or undefined output); real prompts, the empty one included, always
            have L >= 1 attendable tokens (the encoder's special tokens).
        Returns the prediction, (B, out_channels, H, W), in the dtype of the last conv (bf16 under
        bf16 autocast).
        """
        if condition is not None:
            sample = self.concat_condition(sample, condition)
        timestep = torch.as_tensor(timestep, device=sample.device)
        self._check_inputs(sample, timestep, encoder_hidden_states, encoder_attention_mask)
        b = sample.shape[0]
        timestep = timestep.expand(b) if timestep.ndim == 0 else timestep
        context = encoder_hidden_states.to(self.conv_in.weight.dtype)

        attn_mask = keep = None
        if encoder_attention_mask is not None:
            mask = encoder_attention_mask.to(device=sample.device) != 0
            has_text = mask.any(dim=1)  # (B,)
            # An all-False row would make the softmax 0/0; let it attend everywhere and zero the result.
            # Tensor ops only (no `if has_text.all()`), so compiled graphs never depend on mask values.
            attn_mask = (mask | ~has_text[:, None])[:, None, None, :]  # (B, 1, 1, L): broadcast over heads, queries
            keep = has_text[:, None, None]

        temb = self.time_embed(timestep)
        h = self.conv_in(sample)
        skips = [h]
        for level in self.down:
            h = level(h, temb, context, attn_mask, keep, skips)
        h = self.mid(h, temb, context, attn_mask, keep)
        for level in self.up:
            h = level(h, temb, context, attn_mask, keep, skips)
        return self.conv_out(F.silu(self.norm_out(h)))


def _config_fields() -> list[str]:
    return [n for n in inspect.signature(PromptSRUNet.__init__).parameters if n != "self"]


def build_unet(preset: str, **overrides: Any) -> PromptSRUNet:
    """A freshly initialised denoiser from a preset name, with any config field overridden.

    Raises ValueError for an unknown preset or override key (naming it and the valid ones).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from: {', '.join(sorted(PRESETS))}")
    fields = _config_fields()
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(unknown)} for preset {preset!r}; valid: {', '.join(fields)}"
        )
    return PromptSRUNet(**{**PRESETS[preset], **overrides})


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in `model` (only those with requires_grad if `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
