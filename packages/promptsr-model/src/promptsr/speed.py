"""Speed settings shared by training and inference: "auto" switches, TF32, compile backends, and the
one-line notice when a machine cannot use what was asked for.

Each switch is "auto" (on for a CUDA device, off on the CPU), true or false. Asking for one that the
machine cannot use falls back with one `note:` line on stderr, never a crash.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch


def notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def wanted(value: Any, cuda: bool) -> bool:
    """A switch's value resolved for a device: "auto" (or None) is on for CUDA only."""
    return cuda if value in (None, "auto") else bool(value)


def enable_tf32(requested: bool, device: torch.device, name: str = "tf32") -> bool:
    """Turn on TF32 matmuls and convolutions (a process-wide torch setting) when requested on a CUDA
    device; requested elsewhere, one notice and off. Returns whether it is on."""
    if requested and device.type != "cuda":
        notice(f"{name} applies to CUDA devices only; running in full float32 here")
        return False
    if requested:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return requested


def compile_backend(backend: Any) -> str | Callable | None:
    """`backend` (a torch.compile backend name, or a backend callable) if it can be used here, else
    None after one notice. True or "on" means inductor; False, None and "off" mean no compilation."""
    if backend in (False, None, "off"):
        return None
    if backend is True or backend == "on":
        backend = "inductor"
    if callable(backend):
        return backend
    try:
        import torch._dynamo

        if backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise RuntimeError(f"unknown backend; known: {', '.join(torch._dynamo.list_backends())}")
        if backend == "inductor":
            from torch._inductor import config as _inductor_config  # noqa: F401 - fails where inductor cannot load
    except Exception as e:  # any failure to set up compilation means: run eagerly
        notice(f"torch.compile backend {backend!r} is not usable here ({str(e).splitlines()[0]}); running eager")
        return None
    return backend
