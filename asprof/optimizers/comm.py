"""One byte-counted all-reduce helper for data-parallel training.

Every collective the optimizers issue (gradient averaging, KPOP's factor averaging at a refresh,
TopKPOP's projected-gradient averaging) goes through :meth:`Communicator.all_mean`, so the
number of bytes each step puts on the wire is read from one place (``bytes_by_tag``) and the
simulator's communication model (kpop_contract.md step 3-4) can be checked against it.

Bucketing follows ``mlx.nn.average_gradients``: the arrays of a tree are flattened and
concatenated into buckets of at least ``bucket_bytes`` (32 MiB by default), and each bucket is one
``mx.distributed.all_sum`` divided by the group size. Arrays of different dtypes go into separate
buckets. With one process nothing is sent and nothing is counted.
"""

from __future__ import annotations

from collections import defaultdict

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from asprof.spec import BUCKET_BYTES as DEFAULT_BUCKET_BYTES


class Communicator:
    """Averages trees of arrays over a distributed group and counts the payload.

    ``bytes_by_tag[tag]`` accumulates the all-reduce *payload* (the bytes of the reduced
    buffers, what each rank contributes), ``calls_by_tag[tag]`` the number of ``all_sum`` calls.
    A ring all-reduce moves ``2 (K-1) / K`` times the payload out of every rank
    (:meth:`ring_bytes_sent`). :meth:`take_counts` returns the counts since the last call and
    resets them, which is how the training loop gets bytes per step.
    """

    def __init__(self, group: mx.distributed.Group | None = None, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        if not isinstance(bucket_bytes, int) or isinstance(bucket_bytes, bool) or bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be a positive integer, got {bucket_bytes!r}")
        self.group = group if group is not None else mx.distributed.init()
        self.bucket_bytes = bucket_bytes
        self.bytes_by_tag: dict[str, int] = defaultdict(int)
        self.calls_by_tag: dict[str, int] = defaultdict(int)

    @property
    def size(self) -> int:
        return self.group.size()

    @property
    def rank(self) -> int:
        return self.group.rank()

    def all_mean(self, tree, tag: str):
        """The element-wise mean of ``tree`` over the group (lazy, like ``average_gradients``)."""
        k = self.size
        if k == 1:
            return tree
        flat = tree_flatten(tree)
        if not flat:
            return tree
        out = [None] * len(flat)
        for bucket in self._buckets(flat):
            arrays = [flat[i][1] for i in bucket]
            big = mx.concatenate([a.reshape(-1) for a in arrays]) if len(arrays) > 1 else arrays[0].reshape(-1)
            self.bytes_by_tag[tag] += big.nbytes
            self.calls_by_tag[tag] += 1
            big = mx.distributed.all_sum(big, group=self.group) / k
            offsets, acc = [], 0
            for a in arrays[:-1]:
                acc += a.size
                offsets.append(acc)
            parts = mx.split(big, offsets) if offsets else [big]
            for i, part in zip(bucket, parts):
                out[i] = (flat[i][0], part.reshape(flat[i][1].shape))
        return tree_unflatten(out)

    def _buckets(self, flat) -> list[list[int]]:
        """Indices grouped by dtype, each group cut into runs of >= bucket_bytes (the last may be smaller)."""
        by_dtype: dict = {}
        for i, (_, a) in enumerate(flat):
            by_dtype.setdefault(a.dtype, []).append(i)
        buckets = []
        for indices in by_dtype.values():
            current, size = [], 0
            for i in indices:
                current.append(i)
                size += flat[i][1].nbytes
                if size >= self.bucket_bytes:
                    buckets.append(current)
                    current, size = [], 0
            if current:
                buckets.append(current)
        return buckets

    def take_counts(self) -> dict[str, int]:
        """Payload bytes per tag since the last call (then reset)."""
        counts = dict(self.bytes_by_tag)
        self.bytes_by_tag.clear()
        self.calls_by_tag.clear()
        return counts

    def ring_bytes_sent(self, payload_bytes: int) -> int:
        """Bytes one rank sends in a ring all-reduce of ``payload_bytes`` (2 (K-1)/K of it)."""
        k = self.size
        return 0 if k == 1 else (2 * (k - 1) * payload_bytes) // k
