"""`membw`: achievable memory bandwidth, STREAM-style copy and triad over array sizes.

* ``copy``: y = copy(x) — one read and one write per element: bytes_moved = 2·bytes.
* ``triad``: a = b + s·c — two reads and one write: bytes_moved = 3·bytes.
* ``exp``: y = exp(x) — one read and one write like ``copy`` (bytes_moved = 2·bytes), plus
  ``elements_per_s``. Where a transcendental costs more than moving its bytes (MLX's CPU
  ``exp`` is ~50x slower than a copy here), softmax, cross-entropy and SiLU are bound by it,
  not by memory; the simulator costs them per exp evaluated.

``copy`` and ``triad`` are also timed *inside a graph*: a chain of ``params.chain`` dependent
kernels (y ← −y; y ← y + s·c) evaluated once, ``in_graph_s`` = median chain time / chain length
(samples in ``series.chain_s``) — the cost of one such kernel inside a training step, without
the sync that a single timed call adds (tens of microseconds on a busy machine: more than a small
kernel's whole work).

``bytes`` is the size of one array (float32). Bytes moved are the nominal STREAM counts (the
data the kernel must touch), so ``bytes_per_s`` = bytes_moved / median time. Small arrays fit
in cache and show cache bandwidth plus launch overhead; the largest ones show DRAM bandwidth,
which is what the simulator's elementwise and Adam-update costs need.
"""

from __future__ import annotations

from asprof.probe.backends import repeat_op
from asprof.probe.context import ProbeContext
from asprof.probe.harness import per_second
from asprof.traces.schema import Record, Skip

NAME = "membw"
_BYTES = {
    "full": (2**12, 2**14, 2**16, 2**18, 2**20, 2**22, 2**24, 2**26, 2**28),
    "quick": (2**12, 2**14, 2**16, 2**18, 2**20, 2**24, 2**26),
    "tiny": (2**12,),
}


def _human(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:g} {unit}"
    return f"{nbytes} B"


def _exp(backend, x):
    if backend.framework == "mlx":
        return backend.mx.exp(x, stream=backend.stream)
    return backend.torch.exp(x)


CHAIN = 8  # kernels per in-graph chain, at least; small arrays get longer chains (chain_length)


def chain_length(nbytes: int) -> int:
    """Enough kernels that the one sync at the end (tens of microseconds on a busy machine) is a
    small part of the chain: 128 for a few KiB, down to CHAIN from 256 KiB up."""
    return max(CHAIN, min(128, 2**21 // max(nbytes, 1)))


def run(ctx: ProbeContext) -> list[Record | Skip]:
    out: list[Record | Skip] = list(ctx.absent_skips(NAME))
    for backend in ctx.backends:
        triad, fused = backend.triad_fn()
        for nbytes in _BYTES[ctx.level]:
            n = nbytes // 4
            x = backend.randn((n,), "float32", seed=1)
            b = backend.randn((n,), "float32", seed=2)
            c = backend.randn((n,), "float32", seed=3)
            for op, arrays, fn in (("copy", 2, lambda: backend.copy(x)), ("triad", 3, lambda: triad(b, c)),
                                   ("exp", 2, lambda: _exp(backend, x))):
                timing = ctx.measure(backend, fn, f"{op} {_human(nbytes)}")
                moved = arrays * nbytes
                params = {"bytes": nbytes}
                if op == "triad":
                    params["fused"] = fused
                metrics = {"bytes_moved": float(moved), "time_s": timing.median_s,
                           "bytes_per_s": per_second(moved, timing.median_s)}
                if op == "exp":
                    metrics["elements_per_s"] = per_second(n, timing.median_s)
                series = {}
                if op in ("copy", "triad"):
                    step = backend.copy if op == "copy" else (lambda y: triad(y, c))
                    length = chain_length(nbytes)
                    chain = ctx.measure(backend, repeat_op(step, x, length), f"chain of {length} {op} {_human(nbytes)}")
                    params["chain"] = length
                    metrics["in_graph_s"] = chain.median_s / length
                    series["chain_s"] = chain.samples_s
                out.append(Record(NAME, op, backend.framework, backend.device, "float32", params=params,
                                  metrics=metrics, timing=timing, series=series))
                ctx.progress(f"{backend.name} {op} {_human(nbytes)}: "
                             f"{per_second(moved, timing.median_s) / 1e9:.3g} GB/s")
            del x, b, c
    return out
