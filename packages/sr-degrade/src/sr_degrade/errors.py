"""Exceptions raised by sr-degrade.

Every error a user can cause (a bad config value, an image of the wrong kind, an unknown prompt
phrase) is a subclass of `SrDegradeError`, which is a `ValueError`. The command line turns these
into a one-line message and a non-zero exit instead of a traceback.
"""


class SrDegradeError(ValueError):
    """Base class of the errors a user can cause and fix."""


class ConfigError(SrDegradeError):
    """A degradation config value breaks a rule; the message names the field and the rule."""


class ImageError(SrDegradeError):
    """An image array or file is not what the operation needs."""


class PromptError(SrDegradeError):
    """A prompt holds a phrase outside the vocabulary (strict mode) or contradicts itself."""


class SourceError(SrDegradeError):
    """A data source is missing, malformed, or does not match its manifest."""


class EncoderError(SrDegradeError):
    """A text encoder cannot be found or loaded, or embeddings come from another encoder."""


class BuildError(SrDegradeError):
    """A shard build cannot start or continue (existing output of another config, full disk, ...)."""
