"""The degradation estimator (issue 11): a small CNN that reads an LR image and writes its prompt.

One classification head per component: blur, noise and jpeg {none, light, medium, heavy}, resize1
{unchange, upsample, downsample} ("unchange" also stands for an omitted resize1: the two give the
same pixels). Labels are each shard sample's `json` bins (a component missing from the bins was
omitted: "none"). A whole image is judged by averaging the heads' probabilities over a grid of
crops. Saved as a folder: `estimator.safetensors` + `estimator.json` (architecture, classes, scale,
the degradation config whose vocabulary the prompts use, and how it was trained).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sr_degrade.config import DegradationConfig
from sr_degrade.errors import SrDegradeError
from sr_degrade.text import NONE, canonical_prompt

#: Classes of each head, in output order.
CLASSES: dict[str, tuple[str, ...]] = {
    "blur": (NONE, "light", "medium", "heavy"),
    "resize1": ("unchange", "upsample", "downsample"),
    "noise": (NONE, "light", "medium", "heavy"),
    "jpeg": (NONE, "light", "medium", "heavy"),
}
WEIGHTS = "estimator.safetensors"
CONFIG = "estimator.json"
#: Smallest image side (LR pixels) the network can judge: below it the receptive field is mostly padding.
MIN_SIDE = 8
#: The omission config shipped in sr-degrade (blur, noise and jpeg omitted with p 0.25 each).
OMIT_CONFIG = "omit.yaml"


def omit_config_path() -> Path:
    """Path of the omission degradation config shipped inside sr-degrade (for `sr-degrade build --config`)."""
    from importlib import resources

    return Path(str(resources.files("sr_degrade") / "data" / "configs" / OMIT_CONFIG))


@dataclass
class EstimatorConfig:
    """Architecture and training of an estimator; written to estimator.json."""

    crop: int = 32  #: LR crop side the network trains on and tiles whole images by
    width: int = 32  #: channels of the first stage (x2 per stride-2 stage)
    scale: int = 4  #: SR factor of the shards it learned from
    steps: int = 1500  #: training steps
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    degradation: dict[str, Any] = field(default_factory=dict)  #: the shards' degradation config
    trained: dict[str, Any] = field(default_factory=dict)  #: steps run, seconds, validation accuracy


class Estimator(nn.Module):
    """Full-resolution first stage (noise and JPEG live in single pixels), then two stride-2 stages;
    mean and standard deviation pooling; one linear head per component."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.SiLU())

        self.body = nn.Sequential(
            block(3, w, 1), block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1), block(2 * w, 4 * w, 2),
            block(4 * w, 4 * w, 1),
        )  # fmt: skip
        self.heads = nn.ModuleDict({c: nn.Linear(8 * w, len(k)) for c, k in CLASSES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, 3, H, W] in [0, 1] -> {component: logits [B, classes]}."""
        h = self.body(x - 0.5)
        pooled = torch.cat([h.mean((2, 3)), h.std((2, 3))], 1)
        return {c: head(pooled) for c, head in self.heads.items()}


def labels_of(bins: dict[str, str]) -> dict[str, int]:
    """Class index per head from a sample's json bins (missing component: omitted)."""
    out = {}
    for comp, classes in CLASSES.items():
        level = bins.get(comp, "unchange" if comp == "resize1" else NONE)
        out[comp] = classes.index(level)
    return out


def label_row(bins: dict[str, str]) -> list[int]:
    """`labels_of` as one row of the [N, 4] label arrays (heads in CLASSES order)."""
    lab = labels_of(bins)
    return [lab[c] for c in CLASSES]


def load_lr_samples(data: str | Path | list, limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Every sample's LR image and labels [N, 4] from shards (one pass), and their scale."""
    from sr_degrade.shards import open_shards

    images, labels, scales = [], [], set()
    for s in open_shards(_urls(data), mode="eval"):
        images.append(s.lr)
        labels.append(label_row(s.meta["bins"]))
        scales.add(s.scale)
        if limit and len(images) >= limit:
            break
    if not images:
        raise SrDegradeError(f"no samples in {data}")
    if len(scales) != 1:
        raise SrDegradeError(f"shards in {data} mix scales {sorted(scales)}")
    return images, np.asarray(labels, np.int64), scales.pop()


def _urls(data: str | Path | list) -> list[str]:
    """Shard files of one folder/pattern or of several."""
    from sr_degrade.shards import shard_files

    return [u for d in (data if isinstance(data, list) else [data]) for u in shard_files(d)]


def _random_crops(images: list[np.ndarray], idx: np.ndarray, crop: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((len(idx), crop, crop, 3), np.uint8)
    for j, i in enumerate(idx):
        img = images[i]
        h, w = img.shape[:2]
        if h < crop or w < crop:
            img = np.pad(img, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        c = img[y : y + crop, x : x + crop]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        out[j] = c
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def _crop_grid(img: np.ndarray, crop: int) -> torch.Tensor:
    """Non-overlapping crops covering the image (the last row/column flush with the edge); an image
    smaller than the crop is judged whole."""
    h, w = img.shape[:2]
    if h <= crop or w <= crop:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
        return t
    ys = sorted({*range(0, h - crop + 1, crop), h - crop})
    xs = sorted({*range(0, w - crop + 1, crop), w - crop})
    crops = np.stack([img[y : y + crop, x : x + crop] for y in ys for x in xs])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0


def omits_ops(cfg: DegradationConfig) -> bool:
    """Whether a model trained on degradations of `cfg` saw omitted ops, so that its prompts may say
    "none" (else an estimated "none" becomes the lightest level: `canonical_prompt`)."""
    return any(p > 0 for p in cfg.p_omit.values())


class LoadedEstimator:
    """A trained estimator: `probabilities(lr)` and `prompt(lr)` for whole LR images."""

    def __init__(self, net: Estimator, config: EstimatorConfig, folder: Path | None = None):
        self.net = net.eval()
        self.config = config
        self.folder = folder

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def degradation(self) -> DegradationConfig:
        return DegradationConfig.from_dict(self.config.degradation)

    @torch.no_grad()
    def probabilities(self, lr: np.ndarray, max_crops: int = 256) -> dict[str, dict[str, float]]:
        """{component: {class: probability}} averaged over a grid of crops of an H x W x 3 uint8 LR."""
        h, w = lr.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise SrDegradeError(f"image of {w}x{h} pixels is too small to judge (at least {MIN_SIDE} a side)")
        crops = _crop_grid(lr, self.config.crop)
        if len(crops) > max_crops:  # evenly spread subset: a very large image needs no more evidence
            crops = crops[np.linspace(0, len(crops) - 1, max_crops).round().astype(int)]
        sums = {c: torch.zeros(len(k)) for c, k in CLASSES.items()}
        for chunk in crops.split(64):
            logits = self.net(chunk)
            for c in CLASSES:
                sums[c] += logits[c].softmax(1).sum(0)
        return {c: {k: float(p) for k, p in zip(CLASSES[c], sums[c] / len(crops))} for c in CLASSES}

    def levels(self, lr: np.ndarray) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
        probs = self.probabilities(lr)
        return {c: max(p, key=p.get) for c, p in probs.items()}, probs

    def prompt(self, lr: np.ndarray, omission: bool = True) -> tuple[str, list[str], dict[str, dict[str, float]]]:
        """(canonical prompt, notes, probabilities) for one LR image."""
        levels, probs = self.levels(lr)
        text, notes = canonical_prompt(levels, self.degradation, omission=omission)
        return text, notes, probs


def save_estimator(net: Estimator, config: EstimatorConfig, out: Path) -> Path:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(out / WEIGHTS))
    record = {"kind": "promptsr-estimator", "classes": {c: list(k) for c, k in CLASSES.items()}, **asdict(config)}
    (out / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    return out


def is_estimator(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def load_estimator(folder: str | Path) -> LoadedEstimator:
    """Load an estimator folder (safetensors only); a damaged or foreign folder is an SrDegradeError."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not is_estimator(folder):
        raise SrDegradeError(
            f"{folder} holds no degradation estimator ({CONFIG} and {WEIGHTS}); train one with "
            "`promptsr estimator train --data SHARDS --val SHARDS --out DIR`"
        )
    try:
        record = json.loads((folder / CONFIG).read_text())
        if record.get("kind") != "promptsr-estimator":
            raise ValueError("not a promptsr estimator record")
        if {c: tuple(k) for c, k in record.get("classes", {}).items()} != CLASSES:
            raise ValueError(f"its classes {record.get('classes')} are not this version's {dict(CLASSES)}")
        known = set(EstimatorConfig.__dataclass_fields__)
        config = EstimatorConfig(**{k: v for k, v in record.items() if k in known})
        net = Estimator(config.width)
        net.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise SrDegradeError(f"estimator {folder} cannot be loaded: {str(e).splitlines()[0]}") from None
    return LoadedEstimator(net, config, folder)


def check_compatible(est: LoadedEstimator, scale: int, cfg: DegradationConfig | None) -> None:
    """Refuse an estimator trained for another scale or another vocabulary than the model's."""
    if est.scale != scale:
        raise SrDegradeError(f"estimator {est.folder} was trained for x{est.scale}, the model is x{scale}")
    if cfg is not None and est.degradation.phrases() != cfg.phrases():
        ours = ", ".join(p for _, _, p in est.degradation.phrases())
        theirs = ", ".join(p for _, _, p in cfg.phrases())
        raise SrDegradeError(
            f"estimator {est.folder} writes another vocabulary ({ours}) than the model reads ({theirs})"
        )


# ---- training and evaluation ---------------------------------------------------------------------


def _accuracy(net: Estimator, images: list[np.ndarray], labels: np.ndarray, crop: int) -> dict[str, float]:
    est = LoadedEstimator(net, EstimatorConfig(crop=crop))
    preds = predict_all(est, images)
    net.train()
    return {c: float((preds[:, i] == labels[:, i]).mean()) for i, c in enumerate(CLASSES)}


def predict_all(est: LoadedEstimator, images: list[np.ndarray]) -> np.ndarray:
    """Predicted class index [N, 4] for each image (probabilities averaged over its crops)."""
    out = []
    for img in images:
        probs = est.probabilities(img)
        out.append([CLASSES[c].index(max(p, key=p.get)) for c, p in probs.items()])
    return np.asarray(out, np.int64)


class _ShardCrops:
    """Training batches from shards: random crops (and flips) of their stored LR images."""

    def __init__(self, data: str | Path | list, config: EstimatorConfig):
        self.images, self.labels, self.scale = load_lr_samples(data)
        self.degradation = _degradation_of(data)
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.lab_t = torch.from_numpy(self.labels)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self):
        while True:
            idx = self.rng.integers(0, len(self.images), self.config.batch)
            yield _random_crops(self.images, idx, self.config.crop, self.rng), self.lab_t[idx]


class _FreshCrops:
    """Training batches degraded on the fly (`sr_degrade.torch.DegradeOnTheFly`, photos interleaved):
    every crop of every photo gets a new degradation, so a few photos give as many distinct labelled
    samples as the run takes (stored shards repeat theirs and the estimator learns them by heart)."""

    def __init__(self, photos: Any, cfg: DegradationConfig, config: EstimatorConfig, workers: int):
        from torch.utils.data import DataLoader

        from sr_degrade.torch import DegradeOnTheFly, Interleaved, collate

        self.cfg, self.scale, self.degradation = cfg, cfg.scale, cfg.to_dict()
        self.dataset = DegradeOnTheFly(photos, cfg, crop=config.crop * cfg.scale, seed=config.seed, shuffle=0)
        # One pass covers the whole run (the photo count is known once the source is open): each photo
        # yields (steps + workers) x batch / photos crops (each worker drops its last, partial batch), every
        # one with its own degradation.
        needed = (config.steps + max(workers, 1)) * config.batch
        self.dataset.crops_per_image = -(-needed // len(self.dataset.images))
        self.loader = DataLoader(
            Interleaved(self.dataset, config.seed), batch_size=config.batch, num_workers=workers,
            collate_fn=collate, drop_last=True,
        )  # fmt: skip
        self.photos = len(self.dataset.images)

    def __len__(self) -> int:
        return len(self.dataset)

    def labels(self, params: list) -> torch.Tensor:
        from sr_degrade import bins

        return torch.tensor([label_row(bins(p, self.cfg)) for p in params])

    def batches(self):
        for batch in self.loader:
            yield batch["lq"], self.labels(batch["params"])


def _class_weights(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse class frequency per head (a class never seen: weight 0)."""
    out = {}
    for i, c in enumerate(CLASSES):
        counts = np.bincount(labels[:, i], minlength=len(CLASSES[c])).astype(np.float64)
        out[c] = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(counts), 0.0)
    return out


def _config_labels(cfg: DegradationConfig, seed: int, n: int = 4096) -> np.ndarray:
    """Labels of n degradations drawn from cfg (their class frequencies, without any pixels)."""
    from sr_degrade import bins, sample_params

    rng = np.random.default_rng([seed, 7])
    return np.asarray([label_row(bins(sample_params(cfg, rng), cfg)) for _ in range(n)], np.int64)


def _fit(net, opt, sched, acc, source, weights: dict[str, torch.Tensor], config: EstimatorConfig) -> dict[str, Any]:
    """The training loop; returns steps, seconds and the mean loss of the last 100 steps."""
    from sr_degrade.progress import Progress

    start = time.perf_counter()
    net.train()
    progress = Progress(config.steps, "estimator", unit="step")
    recent: list[float] = []
    batches = source.batches()
    for _ in range(config.steps):
        x, y = next(batches)
        x, y = x.to(acc.device), y.to(acc.device)
        logits = net(x)
        loss = sum(F.cross_entropy(logits[c], y[:, i], weight=weights[c]) for i, c in enumerate(CLASSES))
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        sched.step()
        recent = [*recent[-99:], loss.item()]
        progress.update(1, extra=f"loss {np.mean(recent):.3f}")
    progress.close()
    seconds = round(time.perf_counter() - start, 1)
    return {"steps": config.steps, "seconds": seconds, "final_loss": round(float(np.mean(recent)), 4)}


def train_estimator(
    data: str | Path | list | None,
    val: str | Path | list | None,
    out: Path,
    config: EstimatorConfig | None = None,
    log: Callable[[str], None] = print,
    cpu: bool | None = None,
    photos: Any = None,
    degradation: DegradationConfig | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Train the estimator and save it to `out`; validate on the `val` shards.

    Training data is either `data` shards (random crops of their stored LR images, labelled by their
    bins) or `photos` (anything `sr-degrade build --src` takes), degraded on the fly with
    `degradation` (default: the shipped omission config) in `workers` DataLoader processes.
    Runs through Accelerate (one CPU, one GPU); returns the record written to estimator.json's
    `trained` field.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if (data is None) == (photos is None):
        raise SrDegradeError("train the estimator on shards (--data) or on photos (--photos), one of the two")
    config = config or EstimatorConfig()
    if photos is not None:
        cfg = degradation if degradation is not None else DegradationConfig.load(omit_config_path())
        source: _ShardCrops | _FreshCrops = _FreshCrops(photos, cfg, config, workers)
        weight_labels = _config_labels(cfg, config.seed)
    else:
        source = _ShardCrops(data, config)
        weight_labels = source.labels
    val_images, val_labels = None, None
    if val is not None:
        val_images, val_labels, val_scale = load_lr_samples(val)
        if val_scale != source.scale:
            raise SrDegradeError(f"validation shards are x{val_scale}, training data x{source.scale}")
    config.scale = source.scale
    config.degradation = source.degradation
    acc = Accelerator(cpu=cpu if cpu is not None else not torch.cuda.is_available())
    set_seed(config.seed)
    net = Estimator(config.width)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps, pct_start=0.1)
    net, opt = acc.prepare(net, opt)
    # Classes are unbalanced (omission p 0.25 against three levels): weight each head's loss by
    # inverse class frequency, so "none" and the rarer levels are learned, not guessed away.
    weights = {
        c: torch.tensor(w, dtype=torch.float32, device=acc.device) for c, w in _class_weights(weight_labels).items()
    }
    # The DataLoader workers degrading photos need cores of their own: on a CPU, intra-op threads that
    # compete with them made training 1.6x slower on 2 cores (and 10x with two such runs at once).
    threads = torch.get_num_threads()
    if photos is not None and workers > 0 and acc.device.type == "cpu":
        torch.set_num_threads(max(1, threads - workers))
    try:
        trained = _fit(net, opt, sched, acc, source, weights, config)
    finally:
        torch.set_num_threads(threads)
    log(f"trained {config.steps} steps in {trained['seconds']:.0f} s, final loss {trained['final_loss']:.3f}")
    plain = acc.unwrap_model(net).cpu().eval()
    if photos is not None:
        trained["source"] = f"{source.photos} photos degraded on the fly"
        trained["train_samples"] = config.steps * config.batch
    else:
        trained["source"] = "shards"
        trained["train_samples"] = len(source)
    if val_images is not None:
        trained["val_accuracy"] = _accuracy(plain, val_images, val_labels, config.crop)
        trained["val_majority"] = majority_baseline(val_labels)
        trained["val_samples"] = len(val_images)
    config.trained = trained
    save_estimator(plain, config, out)
    return trained


def _degradation_of(data: str | Path | list) -> dict[str, Any]:
    """The degradation config of the shards (their build.json, read from a URL too), for the vocabulary
    check; the default config for local shards without one."""
    from sr_degrade.shards import read_build_info

    return read_build_info(_urls(data)[0]).get("config") or DegradationConfig().to_dict()


def majority_baseline(labels: np.ndarray) -> dict[str, float]:
    """Accuracy of always answering each head's most common class of this very set."""
    return {c: float(np.bincount(labels[:, i]).max() / len(labels)) for i, c in enumerate(CLASSES)}


def evaluate_estimator(est: LoadedEstimator, data: str | Path | list, limit: int | None = None) -> dict[str, Any]:
    """Per-component accuracy, confusion matrix (rows true, columns predicted) and majority baseline."""
    images, labels, scale = load_lr_samples(data, limit)
    if scale != est.scale:
        raise SrDegradeError(f"shards are x{scale}, the estimator x{est.scale}")
    preds = predict_all(est, images)
    out: dict[str, Any] = {"samples": len(images), "components": {}}
    majority = majority_baseline(labels)
    for i, c in enumerate(CLASSES):
        k = len(CLASSES[c])
        conf = np.zeros((k, k), np.int64)
        np.add.at(conf, (labels[:, i], preds[:, i]), 1)
        entry = {
            "accuracy": float((preds[:, i] == labels[:, i]).mean()),
            "majority": majority[c],
            "classes": list(CLASSES[c]),
            "confusion": conf.tolist(),
        }
        if c in ("blur", "noise", "jpeg"):  # none and light merged: the pair is the hardest to see
            merge = lambda a: np.where(a == 0, 1, a)  # noqa: E731
            entry["accuracy_none_light_merged"] = float((merge(preds[:, i]) == merge(labels[:, i])).mean())
            entry["majority_none_light_merged"] = float(np.bincount(merge(labels[:, i])).max() / len(labels))
        out["components"][c] = entry
    return out


def eval_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['samples']} held-out samples",
        "",
        "| component | accuracy | majority baseline | gain (points) | none+light merged (baseline) |",
        "|---|---|---|---|---|",
    ]
    for c, e in result["components"].items():
        merged = (
            f"{100 * e['accuracy_none_light_merged']:.1f} ({100 * e['majority_none_light_merged']:.1f})"
            if "accuracy_none_light_merged" in e
            else "-"
        )
        gain = 100 * (e["accuracy"] - e["majority"])
        lines.append(f"| {c} | {100 * e['accuracy']:.1f} | {100 * e['majority']:.1f} | {gain:+.1f} | {merged} |")
    for c, e in result["components"].items():
        lines += ["", f"{c}: rows true, columns predicted", "", "| true \\ pred | " + " | ".join(e["classes"]) + " |"]
        lines.append("|---" * (len(e["classes"]) + 1) + "|")
        for name, row in zip(e["classes"], e["confusion"]):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)
