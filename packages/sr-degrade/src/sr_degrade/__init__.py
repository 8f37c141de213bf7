"""sr-degrade: the degradation model of text-prompt super-resolution, and its words.

from sr_degrade import DegradationConfig, sample_params, degrade, describe, bins, parse_prompt

cfg = DegradationConfig()                       # the paper's settings
params = sample_params(cfg, np.random.default_rng(3))
lr = degrade(hr, params)                        # H x W x 3 uint8 -> (H//4) x (W//4) x 3 uint8
describe(params)                                # "heavy blur, upsample, medium noise, ..."
parse_prompt("light noise, downsample")         # {"noise": "light", "resize2": "downsample"}
for s in open_shards("shards/train", crop=256): ...   # ShardSample(hr, lr, prompt, params, emb, ...)

The public API is `__all__` here plus the modules named in the package README (`sr_degrade.build`,
`sr_degrade.sources`, `sr_degrade.embed`, `sr_degrade.torch`); everything else is internal.
"""

from .config import DegradationConfig
from .errors import ConfigError, ImageError, PromptError, SrDegradeError
from .imageio import read_image, write_image
from .params import DegradationParams, crop_to_scale, degrade, sample_params
from .shards import ShardSample, open_shards
from .text import PROMPT_FORMATS, ParsedPrompt, bins, describe, parse_prompt, vocabulary

__version__ = "0.1.0"

__all__ = [
    "PROMPT_FORMATS",
    "ConfigError",
    "DegradationConfig",
    "DegradationParams",
    "ImageError",
    "ParsedPrompt",
    "PromptError",
    "ShardSample",
    "SrDegradeError",
    "bins",
    "crop_to_scale",
    "degrade",
    "describe",
    "open_shards",
    "parse_prompt",
    "read_image",
    "sample_params",
    "vocabulary",
    "write_image",
]
