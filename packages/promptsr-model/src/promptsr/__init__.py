"""PromptSR: text-prompt diffusion super-resolution (the model half).

The denoiser, diffusion schedule, trainer, sampler and evaluation land here; prompts and their
degradation come from `sr_degrade`, which this package builds on.
"""

__version__ = "0.1.0"
