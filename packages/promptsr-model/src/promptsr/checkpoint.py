"""Checkpoints of a training run: saved by name, loaded without unpickling, resumed exactly.

    output_dir/checkpoints/step_00005000/
        model.safetensors        the denoiser (Accelerate)
        optimizer.bin            Adam's state (Accelerate; torch.load with weights_only=True)
        scheduler.bin            the lr schedule (Accelerate; weights_only=True)
        ema.safetensors          the EMA weights by parameter name, its settings in the metadata (ours)
        train_state.json         step counters (ours)
        rng_<rank>.safetensors   every rank's torch / CUDA / numpy / Python RNG states (ours)

No file of a checkpoint is a pickle: the EMA and the step counters are written by Accelerate's
save-state hook instead of `register_for_checkpointing` (whose `custom_checkpoint_*.pkl` Accelerate
unpickles with weights_only=False, so a planted file would run code on resume), and the RNG states
replace Accelerate's `random_states_<rank>.pkl`. On resume the EMA is loaded by name and moved to
the training device after loading, so its first update never mixes CPU and GPU tensors.
A checkpoint of the older layout (with `custom_checkpoint_*.pkl`) is refused with one line saying
how to continue.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TrainingError
from .train_step import notice

EMA_FILE = "ema.safetensors"
STATE_FILE = "train_state.json"
LEGACY_PATTERN = "custom_checkpoint_*.pkl"


class TrainState:
    """Step counters, saved and restored with the checkpoint."""

    def __init__(self) -> None:
        self.step = 0
        self.bad_in_a_row = 0
        self.skipped = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "bad_in_a_row": self.bad_in_a_row, "skipped": self.skipped}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.step, self.bad_in_a_row, self.skipped = int(d["step"]), int(d["bad_in_a_row"]), int(d["skipped"])


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first (a save in progress is `step_*.tmp`)."""
    found = [p for p in (Path(out) / "checkpoints").glob("step_*") if re.fullmatch(r"step_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def check_layout(path: Path) -> None:
    """A TrainingError in one line unless `path` is a checkpoint folder of this layout."""
    if not path.is_dir():
        raise TrainingError(f"no checkpoint folder at {path}")
    legacy = sorted(p.name for p in path.glob(LEGACY_PATTERN))
    if legacy:
        raise TrainingError(
            f"{path} is a checkpoint of the older layout ({', '.join(legacy)}), which is not loaded because "
            "unpickling can run code: continue with run.resume=null and a new run.output_dir, or export its "
            "raw weights with `promptsr export RUN --checkpoint PATH --no-ema`"
        )
    if not (path / STATE_FILE).exists():
        raise TrainingError(f"{path} has no {STATE_FILE}: not a complete PromptSR checkpoint")


# ---- EMA by name ---------------------------------------------------------------------------------


def ema_tensors(model: torch.nn.Module, ema: Any) -> dict[str, torch.Tensor]:
    """The EMA shadow weights keyed by the model's parameter names."""
    names = [n for n, _ in model.named_parameters()]
    if len(names) != len(ema.shadow_params):
        raise TrainingError(f"the EMA holds {len(ema.shadow_params)} tensors, the model {len(names)} parameters")
    return {n: s.detach().cpu().contiguous() for n, s in zip(names, ema.shadow_params)}


def save_ema(path: Path, model: torch.nn.Module, ema: Any) -> None:
    from safetensors.torch import save_file

    settings = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    save_file(ema_tensors(model, ema), str(path), metadata={"format": "promptsr-ema", "settings": json.dumps(settings)})


def read_ema(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors by parameter name, EMA settings) of an ema.safetensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != "promptsr-ema":
        raise TrainingError(f"{path}: not a PromptSR EMA file")
    return tensors, json.loads(meta["settings"])


def load_ema(path: Path, model: torch.nn.Module, ema: Any, device: torch.device) -> None:
    """Restore `ema` from its file by parameter name, then move it to `device`."""
    tensors, settings = read_ema(path)
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in tensors]
    if missing or len(tensors) != len(names):
        raise TrainingError(f"{path} does not match the model ({len(missing)} parameters missing, e.g. {missing[:1]})")
    ema.load_state_dict({**settings, "shadow_params": [tensors[n] for n in names]})
    ema.to(device)


# ---- RNG states ----------------------------------------------------------------------------------


def save_rng(path: Path) -> None:
    """This process's torch, CUDA, numpy and Python RNG states as safetensors."""
    from safetensors.torch import save_file

    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state a run uses
    tensors = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(words, dtype=torch.int64),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
    }
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"python": json.dumps([version, gauss]), "numpy": json.dumps([kind, int(pos), int(has_gauss), cached])}
    save_file(tensors, str(path), metadata=meta)


def load_rng(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        get = f.get_tensor
        version, gauss = json.loads(meta["python"])
        random.setstate((version, tuple(int(v) for v in get("python").tolist()), gauss))
        kind, pos, has_gauss, cached = json.loads(meta["numpy"])
        np.random.set_state((kind, get("numpy").numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
        torch.set_rng_state(get("torch"))
        cuda = sorted((k for k in f.keys() if k.startswith("cuda_")), key=lambda k: int(k[5:]))
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([get(k) for k in cuda])


# ---- digests (run.debug_state) -------------------------------------------------------------------


def _digest(obj: Any) -> str:
    """A stable hash of nested state (tensors, arrays, numbers, strings)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(x, np.ndarray):
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode())

    feed(obj)
    return h.hexdigest()[:16]


def state_digests(model, optimizer, lr_scheduler, ema, state: TrainState) -> dict[str, str]:
    """Digests of everything a resume must restore, for checking that it did."""
    return {
        "step": str(state.step),
        "model": _digest(model.state_dict()),
        "optimizer": _digest(optimizer.state_dict()),
        "lr_scheduler": _digest(lr_scheduler.state_dict()),
        "ema": _digest(ema.state_dict()) if ema is not None else "none",
        "torch_rng": _digest(torch.get_rng_state()),
        "numpy_rng": _digest(np.random.get_state()[1]),  # noqa: NPY002
        "python_rng": _digest(random.getstate()[1]),
    }


# ---- saving and resuming -------------------------------------------------------------------------


class Checkpointer:
    """Saves and resumes a run's state through `accelerator.save_state` / `load_state`, with the EMA
    and the step counters written by Accelerate's save hook and read by its load hook (module doc).

    `model`, `optimizer` and `lr_scheduler` are the prepared objects; `ema` may be None.
    """

    def __init__(
        self,
        accelerator,
        out: Path,
        keep: int,
        model,
        optimizer,
        lr_scheduler,
        ema,
        state: TrainState,
        debug: bool = False,
    ):
        self.acc, self.out, self.keep = accelerator, Path(out), keep
        self.model, self.optimizer, self.lr_scheduler, self.ema, self.state = model, optimizer, lr_scheduler, ema, state
        self.debug = debug
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    @property
    def net(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.model)

    def digests(self) -> dict[str, str]:
        return state_digests(self.net, self.optimizer, self.lr_scheduler, self.ema, self.state)

    def _save_hook(self, models, weights, output_dir: str) -> None:
        folder = Path(output_dir)
        if self.acc.is_main_process:
            if self.ema is not None:
                save_ema(folder / EMA_FILE, self.net, self.ema)
            (folder / STATE_FILE).write_text(json.dumps(self.state.state_dict(), indent=2))
        save_rng(folder / f"rng_{self.acc.process_index}.safetensors")

    def _load_hook(self, models, input_dir: str) -> None:
        folder = Path(input_dir)
        self.state.load_state_dict(json.loads((folder / STATE_FILE).read_text()))
        if self.ema is not None:
            if not (folder / EMA_FILE).exists():
                raise TrainingError(f"{folder} has no {EMA_FILE}, but this run keeps an EMA (optim.ema_decay > 0)")
            load_ema(folder / EMA_FILE, self.net, self.ema, self.acc.device)

    def save(self) -> Path:
        """Save the whole state as checkpoints/step_<step>, keeping the newest `keep`. Written into
        step_<step>.tmp and renamed once every rank has written its part, so a folder named step_<n>
        is always complete."""
        path = self.out / "checkpoints" / f"step_{self.state.step:08d}"
        tmp = path.with_name(path.name + ".tmp")
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        (tmp / f"random_states_{self.acc.process_index}.pkl").unlink(missing_ok=True)  # ours replaces it
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
            if self.debug:
                (path / "digests.json").write_text(json.dumps(self.digests(), indent=2))
            stale = list(path.parent.glob("step_*.tmp"))  # saves cut short by a killed run
            for old in [*checkpoints(self.out)[: -self.keep], *stale]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return path

    def resume(self, spec: str | None) -> Path | None:
        """Load the checkpoint `spec` names and return its folder: "auto", the newest complete one in
        output_dir (one that is damaged is skipped with a note naming it and why, and the one before
        it is tried); a path, exactly that one; None, none."""
        if not spec:
            return None
        if spec != "auto":
            try:
                self._load(Path(spec))
            except DamagedCheckpoint as e:
                raise TrainingError(f"cannot resume from {spec}: {e}") from None
            return Path(spec)
        found = checkpoints(self.out)
        for path in reversed(found):
            try:
                self._load(path)
                return path
            except DamagedCheckpoint as e:
                notice(f"skipping {path}: {e}")
        if found:
            raise TrainingError(
                f"no complete checkpoint in {self.out / 'checkpoints'} ({len(found)} damaged, see the notes above): "
                "remove them to start over, or set run.resume=null and a new run.output_dir"
            )
        return None

    def _load(self, path: Path) -> None:
        check_layout(path)  # an older (pickled) layout is refused, never skipped past
        rng = path / f"rng_{self.acc.process_index}.safetensors"
        check_complete(path, ema=self.ema is not None, rng=rng)
        try:
            self.acc.load_state(str(path))
        except (RuntimeError, KeyError, ValueError) as e:
            raise TrainingError(
                f"cannot resume from {path}: {str(e).splitlines()[0]} (a checkpoint of another preset or config?)"
            ) from None
        except (pickle.UnpicklingError, EOFError, OSError) as e:  # optimizer.bin / scheduler.bin
            raise DamagedCheckpoint(
                f"optimizer.bin or scheduler.bin is unreadable or not plain tensors ({type(e).__name__})"
            ) from None
        if rng.exists():
            load_rng(rng)
        else:
            notice(f"{path} has no RNG state for rank {self.acc.process_index}; this rank continues from its seed")
        if self.debug and self.acc.is_main_process:
            (self.out / "resume_check.json").write_text(json.dumps({"from": str(path), **self.digests()}, indent=2))


class DamagedCheckpoint(TrainingError):
    """A checkpoint folder with a missing, truncated or unreadable file."""


def check_complete(path: Path, ema: bool, rng: Path) -> None:
    """A DamagedCheckpoint unless `path` holds every file a resume reads, each readable: the
    safetensors files are opened (a truncated one fails its header or size check) and the JSON parsed."""
    from safetensors import safe_open

    needed = ["model.safetensors", "optimizer.bin", "scheduler.bin", STATE_FILE] + ([EMA_FILE] if ema else [])
    missing = [n for n in needed if not (path / n).is_file()]
    if missing:
        raise DamagedCheckpoint(f"{', '.join(missing)} missing")
    for name in ["model.safetensors", *([EMA_FILE] if ema else []), *([rng.name] if rng.exists() else [])]:
        try:
            with safe_open(str(path / name), framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)
        except Exception as e:
            raise DamagedCheckpoint(f"{name} is damaged ({str(e).splitlines()[0][:80]})") from None
    try:
        TrainState().load_state_dict(json.loads((path / STATE_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedCheckpoint(f"{STATE_FILE} is damaged ({type(e).__name__})") from None
