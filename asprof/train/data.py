"""Training text as byte-level tokens, and deterministic (sharded) batches.

Default corpus: the Python standard library's own source — the ``*.py`` files directly under
``sysconfig.get_paths()["stdlib"]`` in sorted order, concatenated up to ``DEFAULT_CORPUS_BYTES``.
Every Python installation has it (DESIGN §6), so ``asprof train`` needs no download; the exact
text depends on the Python version, so the corpus carries a fingerprint (first 12 hex digits of
its SHA-256) that results record. ``--data FILE`` takes any file instead.

Tokens are bytes (vocabulary 256). The last ``val_fraction`` of the bytes is the validation split.
Batch ``step`` of a run with ``seed`` is drawn from ``numpy.random.default_rng([seed, step])``: the
*global* batch is the same however many ranks there are, and rank r of K takes rows
[r·B/K, (r+1)·B/K), so K-process training sees exactly the single-process batch.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asprof.errors import AsprofError
DEFAULT_CORPUS_BYTES = 4 * 1024**2
DEFAULT_VAL_FRACTION = 0.05


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # uint8 tokens
    val: np.ndarray
    source: str        # "python-stdlib (N files)" or the file path
    fingerprint: str   # sha256 prefix of all bytes

    def describe(self) -> dict:
        return {"source": self.source, "fingerprint": self.fingerprint,
                "train_tokens": int(self.train.size), "val_tokens": int(self.val.size)}


def stdlib_files() -> list[str]:
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


def read_stdlib(max_bytes: int = DEFAULT_CORPUS_BYTES) -> tuple[bytes, int]:
    """The default corpus bytes and the number of files used."""
    chunks, total, used = [], 0, 0
    for path in stdlib_files():
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        chunks.append(data)
        total += len(data)
        used += 1
        if total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes], used


def read_data(path: str, check_only: bool = False) -> bytes:
    """The bytes of --data FILE (nothing with ``check_only``), or one line saying why not."""
    try:
        with open(path, "rb") as f:
            return b"" if check_only else f.read()
    except OSError as e:
        raise AsprofError(f"--data {path}: cannot read ({e.strerror or e}); pass a readable text file") from None


def load_corpus(path: str | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                max_bytes: int = DEFAULT_CORPUS_BYTES) -> Corpus:
    """The default corpus (``path=None``) or the user's file, split into train / validation."""
    if not 0.0 < val_fraction < 1.0:
        raise AsprofError(f"validation fraction must be in (0, 1), got {val_fraction}")
    if path is None:
        data, n_files = read_stdlib(max_bytes)
        source = f"python-stdlib ({n_files} files under {sysconfig.get_paths()['stdlib']})"
        if not data:
            raise AsprofError("found no Python standard library sources to train on; pass --data FILE")
    else:
        data = read_data(path)
        source = str(Path(path))
    tokens = np.frombuffer(data, dtype=np.uint8)
    n_val = max(1, int(tokens.size * val_fraction))
    return Corpus(train=tokens[:-n_val], val=tokens[-n_val:], source=source,
                  fingerprint=hashlib.sha256(data).hexdigest()[:12])


def check_fits(corpus: Corpus, seq: int) -> None:
    """Both splits must hold at least one window of seq + 1 tokens."""
    for name, split in (("training", corpus.train), ("validation", corpus.val)):
        if split.size < seq + 1:
            raise AsprofError(
                f"{corpus.source}: the {name} split has {split.size} tokens, fewer than one sequence "
                f"of {seq + 1}; use more text or a smaller --seq")


def shard_rows(global_batch: int, rank: int, world: int) -> slice:
    if global_batch % world:
        raise AsprofError(f"global batch {global_batch} is not divisible by {world} ranks; pick a multiple of {world}")
    per = global_batch // world
    return slice(rank * per, (rank + 1) * per)


def train_batch(corpus: Corpus, step: int, seed: int, global_batch: int, seq: int,
                rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) int32 arrays of shape (global_batch / world, seq) for this rank."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, corpus.train.size - seq, size=global_batch)[shard_rows(global_batch, rank, world)]
    windows = np.stack([corpus.train[s:s + seq + 1] for s in starts]).astype(np.int32)
    return windows[:, :-1], windows[:, 1:]


def val_batches(corpus: Corpus, n_batches: int, batch: int, seq: int, rank: int = 0, world: int = 1):
    """A fixed validation set: n_batches × batch windows evenly spaced over the validation split
    (the same whatever the seed), each batch sharded over the ranks like the training batches."""
    n = n_batches * batch
    starts = np.linspace(0, corpus.val.size - seq - 1, num=n).astype(np.int64)
    rows = shard_rows(batch, rank, world)
    for i in range(n_batches):
        windows = np.stack([corpus.val[s:s + seq + 1] for s in starts[i * batch:(i + 1) * batch]]).astype(np.int32)
        windows = windows[rows]
        yield windows[:, :-1], windows[:, 1:]
