"""`blas`: matmul, matvec and vector-Jacobian product throughput (profiling paper §4.4).

For every backend and dtype (float32 / float16 / bfloat16) it sweeps sizes upwards:

* ``matmul`` (params m, n, k, batch): C = A·B with A (batch, m, k), B (batch, k, n);
  flop = 2·m·n·k·batch. Square sizes plus the paper's batched 8×2000×2000 (Fig. 5).
* ``matvec`` (params m, n): y = A·x, flop = 2·m·n (memory-bound, Fig. 6).
* ``vjp`` (params m, n): forward y = A·x and the VJP vᵀA of x ↦ A·x through the framework's
  autodiff, both evaluated: flop = 4·m·n (Fig. 7; the backward pass's basic kernel).
* ``matmul_nt`` / ``matmul_tn`` (params m, n, k, batch; float32, square sizes): C = A·Bᵀ with
  B stored (n, k), and C = Aᵀ·B with A stored (k, m) — the transposed views are made before the
  timed call, so the BLAS gets the transpose flag, exactly as in a training step (a linear
  layer's forward is x·Wᵀ, its weight gradient dYᵀ·X). The layout can halve the rate: MLX's
  Linux wheel's reference BLAS runs A·Bᵀ at about half the rate of A·B.

* ``matmul_shape`` (MLX, float32; quick and full levels): a grid of rectangular shapes in the three
  layouts, timed in a graph (asprof.probe.blas_shapes), because a step's GEMMs are not square
  (the simulator prices GEMMs from it where a trace has it; ``--square-gemms`` does not).

Metrics: ``flop``, ``time_s`` (median) and ``flops_per_s`` = flop / median (decimal units when
shown). Square single matmuls (all three layouts) are also timed *inside a graph*: a chain of
``params.chain`` dependent products y ← y·B (y·Bᵀ, yᵀ·B) evaluated once, ``in_graph_s`` = median
chain time / chain length (samples in ``series.chain_s``). That is a GEMM's cost inside a
training step, where no sync follows each op; the synced ``time_s`` also holds a sync, which on
a busy machine is a noisy tens of microseconds. A size whose call would exceed the level's per-call limit, estimated from the best rate
measured on smaller sizes, is skipped with the estimate as the reason.
"""

from __future__ import annotations

from asprof.probe import blas_shapes
from asprof.probe.backends import DTYPES, Backend, dtype_supported
from asprof.probe.context import ProbeContext, slow_reason, too_slow
from asprof.probe.harness import per_second
from asprof.traces.schema import Record, Skip

NAME = "blas"

_SQUARE = {"full": (16, 32, 64, 128, 256, 512, 1024, 2048), "quick": (16, 32, 64, 128, 256, 512, 1024), "tiny": (8, 16)}
_BATCHED = {"full": ((2000, 2000, 2000, 8),), "quick": ((2000, 2000, 2000, 8),), "tiny": ((16, 16, 16, 2),)}
_VECTOR = {"full": (256, 1024, 4096, 8192), "quick": (256, 1024, 4096), "tiny": (16,)}


LAYOUT_OPS = ("matmul_nt", "matmul_tn")  # float32 only: the dtype the simulator's workloads train in
MATMUL_OPS = ("matmul",) + LAYOUT_OPS


def shapes(level: str) -> dict[str, list[tuple[int, ...]]]:
    """The sweep per op at ``level``, in increasing cost."""
    square = [(n, n, n, 1) for n in _SQUARE[level]]
    vec = [(n, n) for n in _VECTOR[level]]
    return {"matmul": square + list(_BATCHED[level]), "matvec": vec, "vjp": vec,
            "matmul_nt": square, "matmul_tn": square}


def flop(op: str, shape: tuple[int, ...]) -> float:
    if op in MATMUL_OPS:
        m, n, k, batch = shape
        return 2.0 * m * n * k * batch
    m, n = shape
    return (2.0 if op == "matvec" else 4.0) * m * n


def _params(op: str, shape: tuple[int, ...]) -> dict:
    if op in MATMUL_OPS:
        return dict(zip(("m", "n", "k", "batch"), shape))
    return {"m": shape[0], "n": shape[1]}


def _label(op: str, shape: tuple[int, ...]) -> str:
    if op in MATMUL_OPS:
        m, n, k, b = shape
        a_, b_ = {"matmul": ("", ""), "matmul_nt": ("", "ᵀ"), "matmul_tn": ("ᵀ", "")}[op]
        lead = f"{b}x" if b > 1 else ""
        return f"matmul {lead}{m}x{k}{a_}@{k}x{n}{b_}"
    return f"{op} {shape[0]}x{shape[1]}"


def _workload(backend: Backend, op: str, shape: tuple[int, ...], dtype: str):
    """Inputs created (and evaluated) outside the timed region; returns the call to time."""
    if op in MATMUL_OPS:
        m, n, k, batch = shape
        lead = (batch,) if batch > 1 else ()
        a_shape, b_shape = {"matmul": ((m, k), (k, n)), "matmul_nt": ((m, k), (n, k)),
                            "matmul_tn": ((k, m), (k, n))}[op]
        a = backend.randn(lead + a_shape, dtype, seed=1)
        b = backend.randn(lead + b_shape, dtype, seed=2)
        if op == "matmul_nt":
            b = _transposed(backend, b)
        elif op == "matmul_tn":
            a = _transposed(backend, a)
        return lambda: backend.matmul(a, b)
    m, n = shape
    a = backend.randn((m, n), dtype, seed=1)
    x = backend.randn((n,), dtype, seed=2)
    if op == "matvec":
        return lambda: backend.matmul(a, x)
    v = backend.randn((m,), dtype, seed=3)
    return lambda: backend.vjp(a, x, v)


def _transposed(backend: Backend, x):
    """A transposed *view* of x's last two axes, made (and evaluated) outside the timed call."""
    if backend.framework == "mlx":
        t = backend.mx.swapaxes(x, -1, -2)
        backend.mx.eval(t)
        return t
    return x.transpose(-2, -1)


CHAIN = 8  # GEMMs per in-graph chain, at least (small ones get longer chains: chain_length)


def chain_length(n: int) -> int:
    """Enough GEMMs that the chain's one sync is a small part of it: 8 from 64³ up, up to 128
    for the smallest (whose work is a few microseconds)."""
    return max(CHAIN, min(128, int(4e6 // (2 * n**3))))


def _chain(backend: Backend, op: str, n: int, dtype: str):
    """chain_length(n) dependent n×n products in one lazy graph (B scaled by 1/√n keeps y steady)."""
    a = backend.randn((n, n), dtype, seed=1)
    b = backend.randn((n, n), dtype, seed=2) * (1.0 / n**0.5)
    backend.sync(b)
    if op == "matmul_nt":
        b = _transposed(backend, b)
    swap = (lambda y: backend.mx.swapaxes(y, -1, -2)) if backend.framework == "mlx" else (lambda y: y.transpose(-2, -1))

    length = chain_length(n)

    def run():
        y = a
        for _ in range(length):
            y = backend.matmul(swap(y) if op == "matmul_tn" else y, b)
        return y

    return run


def measure_one(ctx: ProbeContext, backend: Backend, op: str, shape: tuple[int, ...], dtype: str) -> Record:
    """One timed point of the sweep (also used by benchmarks/bench_probe_gemm.py)."""
    fn = _workload(backend, op, shape, dtype)
    timing = ctx.measure(backend, fn, f"{dtype} {_label(op, shape)}")
    f = flop(op, shape)
    params, metrics, series = _params(op, shape), {"flop": f, "flops_per_s": per_second(f, timing.median_s),
                                                    "time_s": timing.median_s}, {}
    if op in MATMUL_OPS and shape[3] == 1 and shape[0] == shape[1] == shape[2]:
        length = chain_length(shape[0])
        chain = ctx.measure(backend, _chain(backend, op, shape[0], dtype), f"{dtype} chain of {length} {_label(op, shape)}")
        params["chain"] = length
        metrics["in_graph_s"] = chain.median_s / length
        series["chain_s"] = chain.samples_s
    return Record(NAME, op, backend.framework, backend.device, dtype, params=params, metrics=metrics,
                  timing=timing, series=series)


def run(ctx: ProbeContext) -> list[Record | Skip]:
    out: list[Record | Skip] = list(ctx.absent_skips(NAME))
    sweep = shapes(ctx.level)
    for backend in ctx.backends:
        for dtype in ctx.option("dtypes", DTYPES):
            reason = dtype_supported(backend, dtype)
            if reason:
                out.append(Skip(NAME, backend.framework, backend.device, reason))
                continue
            for op, op_shapes in sweep.items():
                if op in LAYOUT_OPS and dtype != "float32":
                    continue
                best_rate, last_s = 0.0, None
                for shape in op_shapes:
                    what = f"{dtype} {_label(op, shape)}"
                    estimate = flop(op, shape) / best_rate if best_rate > 0 else None
                    if too_slow(estimate, last_s, ctx):
                        out.append(Skip(NAME, backend.framework, backend.device,
                                        slow_reason(what, estimate, f"{best_rate / 1e9:.3g} GFLOP/s", ctx)))
                        continue
                    rec = measure_one(ctx, backend, op, shape, dtype)
                    best_rate = max(best_rate, rec.metrics["flops_per_s"])
                    last_s = rec.metrics["time_s"]
                    ctx.progress(f"{backend.name} {what}: {rec.metrics['flops_per_s'] / 1e9:.3g} GFLOP/s")
                    out.append(rec)
            if backend.framework == "mlx" and dtype == "float32" and ctx.level in ("quick", "full"):
                out += blas_shapes.run(ctx, backend)  # ~20-30 s on a slow CPU (docs/validate.md §6.3)
    return out
