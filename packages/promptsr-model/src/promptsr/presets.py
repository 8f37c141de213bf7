"""The denoiser presets as plain data (no torch import), so a command can check a preset name at once."""

from __future__ import annotations

from typing import Any

# The paper's denoiser (4.1.3) and a small one for tests and CPU demos. Presets name every field they
# fix so `promptsr info` shows what a name means; the rest keep the class defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "promptsr_x4": {
        "in_channels": 6,
        "out_channels": 3,
        "base_channels": 64,
        "channel_mult": (1, 2, 4, 8),
        "num_res_blocks": 2,
        "cross_attention_levels": (True, True, True, True),
        "self_attention_levels": (False, False, False, False),
        "mid_cross_attention": True,
        "mid_self_attention": False,
        "attention_head_dim": 64,
        "cross_attention_dim": 768,  # CLIP ViT-L/14 text tower, the paper's encoder
        "norm_groups": 32,
        "dropout": 0.0,
        "time_embed_dim": None,
    },
    "tiny": {
        "in_channels": 6,
        "out_channels": 3,
        "base_channels": 16,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "cross_attention_levels": (True, True),
        "self_attention_levels": (False, False),
        "mid_cross_attention": True,
        "mid_self_attention": False,
        "attention_head_dim": 8,  # 2 and 4 heads
        "cross_attention_dim": 384,  # the offline MiniLM encoder
        "norm_groups": 8,
        "dropout": 0.0,
        "time_embed_dim": None,
    },
}
