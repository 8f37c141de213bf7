"""The typed training config: one frozen dataclass per section, YAML in, `key=value` overrides,
the resolved config written next to the run.

    cfg = load_train_config("configs/promptsr_x4.yaml", ["optim.lr=1e-4", "run.output_dir=runs/a"])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sr_degrade.config import dataclass_from_dict, dataclass_to_dict
from sr_degrade.errors import ConfigError

from .diffusion_config import DiffusionConfig

PROMPT_FORMATS = ("original", "shuffled", "simplified", "empty")


@dataclass(frozen=True)
class DataConfig:
    train: str = "shards/train"  #: training shards: a folder, glob or brace pattern
    val: str | None = None  #: held-out shards for validation (None: no validation pass)
    crop: int = 256  #: HR crop side; the LR crop is crop / scale (paper: 64 LR)
    num_workers: int = 2  #: DataLoader workers per rank
    shuffle_buffer: int = 1000  #: samples in each reader's shuffle buffer
    #: Prompt formats re-rendered from the stored parameters, with probabilities (Table 1, 3b).
    prompt_formats: dict[str, float] = field(default_factory=lambda: {"original": 1.0})
    #: Encoder for prompts encoded live; None: the shards' own encoder. Stored embeddings are used
    #: as they are whenever the prompt is the stored one.
    text_encoder: str | None = None
    #: Photos degraded afresh every epoch instead of the shards of `train` (which is then not read): what
    #: `sr-degrade build --src` takes (a folder, a list file, 'sample', a named source). Needs `text_encoder`
    #: (each prompt is encoded live, once) and uses the paper's degradation config.
    photos: str | None = None
    photo_crop: int = 128  #: with `photos`: the HR side each degradation runs on (`crop` is cut from it)
    crops_per_photo: int = 64  #: with `photos`: samples per photo and epoch (each epoch: new crops, new degradations)


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "promptsr_x4"  #: "promptsr_x4" (the paper's) or "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  #: fields of the U-Net config to change


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 16  #: global batch: all ranks and all accumulation steps together
    grad_accum: int = 1  #: gradient accumulation steps
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = (500_000,)  #: steps where the lr is multiplied by lr_gamma
    lr_gamma: float = 0.5
    grad_clip: float = 1.0  #: max global gradient norm (0 = off)
    max_steps: int = 1_000_000
    ema_decay: float = 0.0  #: 0 = no EMA; e.g. 0.999
    max_bad_steps: int = 10  #: NaN/inf losses in a row before the run stops (after saving)


@dataclass(frozen=True)
class RunConfig:
    output_dir: str = "runs/promptsr_x4"
    seed: int = 0
    mixed_precision: str = "no"  #: "no", "bf16" or "fp16" (bf16 on GPUs)
    cpu: bool = False  #: force the CPU even when a GPU is there
    log_every: int = 50
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3  #: the newest checkpoints kept (>= 1)
    val_every: int = 10_000
    val_samples: int = 8
    val_steps: int = 50  #: DDIM steps of the validation samples
    val_crop: int | None = None  #: HR side of the validation centre crops (None: data.crop)
    resume: str | None = "auto"  #: "auto": the latest checkpoint in output_dir; a path; or null
    # Speed (README, "Training on a GPU"): "auto" turns each on for a CUDA device and off on the CPU;
    # true asks for it anywhere (a machine that cannot use it falls back with one notice); false is off.
    tf32: Any = "auto"  #: TF32 matmuls and convolutions, cudnn.benchmark (CUDA only)
    channels_last: Any = "auto"  #: NHWC memory format for the denoiser and its inputs
    fused_adam: Any = "auto"  #: torch's fused Adam kernel
    compile: Any = "auto"  #: torch.compile the training forward: auto, true (inductor), false, or a backend name
    #: also write state digests (checkpoints/*/digests.json, resume_check.json, final_rank*.json), for tests
    debug_state: bool = False


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _at_least_1(v: int) -> bool:
    return v >= 1


_OPTIM_COUNTS = ("batch_size", "grad_accum", "max_steps", "max_bad_steps")
_RUN_COUNTS = ("log_every", "checkpoint_every", "val_every", "keep_checkpoints", "val_samples", "val_steps")
#: (field, test, what is expected): the values a run can use, checked where the config is read.
_RANGES: tuple[tuple[str, Any, str], ...] = (
    *((f"optim.{n}", _at_least_1, "an integer >= 1") for n in _OPTIM_COUNTS),
    *((f"run.{n}", _at_least_1, "an integer >= 1") for n in _RUN_COUNTS),
    ("optim.lr", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("optim.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9, 0.99]"),
    ("optim.weight_decay", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("optim.lr_gamma", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("optim.grad_clip", lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = off)"),
    ("optim.ema_decay", lambda v: 0 <= v < 1, "a number in [0, 1) (0 = no EMA)"),
    ("data.crop", lambda v: v > 0, "a positive HR crop side, a multiple of the scale and of the model's size multiple"),
    ("data.num_workers", lambda v: v >= 0, "an integer >= 0"),
    ("data.shuffle_buffer", lambda v: v >= 0, "an integer >= 0"),
    ("data.photo_crop", lambda v: v > 0, "a positive HR side, a multiple of the scale, at least data.crop"),
    ("data.crops_per_photo", _at_least_1, "an integer >= 1"),
    ("run.val_crop", lambda v: v is None or v > 0, "null (data.crop) or a positive HR side"),
    ("diffusion.num_train_timesteps", _at_least_1, "an integer >= 1 (the paper's T = 2000)"),
    ("diffusion.beta_start", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("diffusion.beta_end", lambda v: 0 < v < 1, "a number in (0, 1)"),
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        fmts = self.data.prompt_formats
        unknown = [k for k in fmts if k not in PROMPT_FORMATS]
        if unknown or not fmts or abs(sum(fmts.values()) - 1.0) > 1e-6 or min(fmts.values()) < 0:
            raise ConfigError(
                f"config field 'data.prompt_formats' = {fmts!r}: needs probabilities over {list(PROMPT_FORMATS)} "
                "summing to 1"
            )
        if self.run.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(
                f"config field 'run.mixed_precision' = {self.run.mixed_precision!r}: use no, bf16 or fp16"
            )
        for name in ("tf32", "channels_last", "fused_adam"):
            if getattr(self.run, name) not in (True, False, "auto"):
                raise ConfigError(f"config field 'run.{name}' = {getattr(self.run, name)!r}: use auto, true or false")
        if not isinstance(self.run.compile, (bool, str)) or self.run.compile == "":
            raise ConfigError(
                f"config field 'run.compile' = {self.run.compile!r}: use auto, true, false or a torch.compile "
                "backend name"
            )
        if self.data.photos is not None:
            if not isinstance(self.data.photos, str) or not self.data.photos:
                raise ConfigError(f"config field 'data.photos' = {self.data.photos!r}: a folder, list file or name")
            if not self.data.text_encoder:
                raise ConfigError(
                    "config field 'data.photos' needs 'data.text_encoder' (e.g. minilm): the prompts of fresh "
                    "degradations are encoded live"
                )
            if self.data.photo_crop < self.data.crop:
                raise ConfigError(
                    f"config field 'data.photo_crop' = {self.data.photo_crop}: at least data.crop ({self.data.crop})"
                )
        for key, ok, expected in _RANGES:
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if not ok(value):
                raise ConfigError(f"config field '{key}' = {value!r}: expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, data)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = value


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (missing fields keep their defaults) and apply `key=value` overrides,
    whose values are parsed as YAML (`optim.lr=1e-4`, `data.prompt_formats={original: 0.9, empty: 0.1}`)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    overridden = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
        overridden.append(key.strip())
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as e:
        # Blame the override when the message names a key that one set, else the file.
        named = [k for k in overridden if f"'{k}'" in str(e)]
        where = f"override {named[-1]}: " if named else (f"{path}: " if path else "")
        raise ConfigError(f"{where}{e}") from None
