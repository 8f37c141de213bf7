"""Exceptions raised by sr-degrade.

Every error a user can cause (a bad config value, an image of the wrong kind, an unknown prompt
phrase) is a subclass of `SrDegradeError`, which is a `ValueError`. The command line turns these
into a one-line message and a non-zero exit instead of a traceback.
"""

import unicodedata


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


class LockError(SrDegradeError):
    """Another process holds the output this one would write (a build, a training run)."""


class BuildError(SrDegradeError):
    """A shard build cannot start or continue (existing output of another config, full disk, ...)."""


class StorageError(SrDegradeError):
    """A file or URL (s3://, gs://, http(s)://, ...) cannot be read or written: a missing bucket or object,
    access denied, an unreachable endpoint, an fsspec implementation not installed. The message names
    the URL and what to do (`sr_degrade.storage`)."""

    #: True when the file or object itself is not there (its bucket and the endpoint are fine).
    missing = False


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control and format characters (escape sequences, carriage
    returns, bidirectional overrides) and undecodable file-name bytes (surrogate escapes) are shown as
    backslash escapes, so what comes from a file or a file name can never drive the terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if ch.isprintable() or unicodedata.category(ch) == "Zs":  # letters, marks, symbols, spaces
            out.append(ch)
        elif 0xDC80 <= o <= 0xDCFF:  # a byte of a file name that is not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)
