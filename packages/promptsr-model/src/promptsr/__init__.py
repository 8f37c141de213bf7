"""PromptSR: text-prompt diffusion super-resolution (the model half).

The denoiser, diffusion schedule, trainer, sampler and evaluation land here; prompts and their
degradation come from `sr_degrade`, which this package builds on.
"""

from ._version import __version__

__all__ = ["__version__", "upscale"]


def upscale(image, prompt: str = "", *, model, **kwargs):
    """Upscale an H x W x 3 uint8 RGB image with a prompt: `promptsr.upscale(lr, "light noise,
    downsample", model="model/")`. See promptsr.inference.Upscaler for the options."""
    from .inference import upscale as _upscale

    return _upscale(image, prompt, model=model, **kwargs)
