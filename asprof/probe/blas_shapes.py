"""The blas probe's GEMM shape grid: op ``matmul_shape`` (MLX backends, float32).

A training step's GEMMs are rarely square: a linear layer's forward is (tokens × d_in)·(d_in ×
d_out)ᵀ, its weight gradient (d_out × tokens)·(tokens × d_in), attention's products are small
and batched. A BLAS runs the same flop count at shape- and layout-dependent rates: on MLX's Linux
reference BLAS a 64×512·512×64 Aᵀ·B took 0.72 ms where the square-sweep rate at its flop count
said 0.98, and the 512×64·64×64 A·B 21 % more than that rate said (docs/validate.md §6.3). So
the probe times every (m, n, k) of a log grid of dimensions, in the three operand layouts, and
the simulator interpolates between them (asprof.simulate.gemm_grid).

Each point is timed *inside a graph*: ``params.count`` independent products (distinct operands,
so nothing can be merged) evaluated at once, ``in_graph_s`` = time / count — a GEMM's cost in a
step's lazy graph, without a sync per op. ``count`` gives small shapes enough work that the one
sync is a small part of the measurement. Params: m, n, k, layout ("nn" A·B, "nt" A·Bᵀ with B
stored (n, k), "tn" Aᵀ·B with A stored (k, m)), count. Points estimated above the level's
per-call limit are skipped with the reason.
"""

from __future__ import annotations

from itertools import product

from asprof.probe.backends import Backend
from asprof.probe.context import ProbeContext, slow_reason, too_slow
from asprof.probe.harness import per_second
from asprof.traces.schema import Record, Skip

OP = "matmul_shape"
LAYOUTS = ("nn", "nt", "tn")
DIMS = {"full": (16, 64, 256, 1024, 4096), "quick": (16, 64, 256, 1024), "tiny": (8, 16)}
WORK_FLOP = 2e7  # flop per timed graph, at least (~1-2 ms on a slow CPU BLAS)


def grid(level: str) -> list[tuple[int, int, int]]:
    """Every (m, n, k) of the level's dimensions, in increasing flop."""
    dims = DIMS[level]
    return sorted(product(dims, dims, dims), key=lambda s: (s[0] * s[1] * s[2], s))


def count_for(m: int, n: int, k: int) -> int:
    return max(1, min(128, int(WORK_FLOP // (2 * m * n * k))))


def _products(backend: Backend, layout: str, m: int, n: int, k: int, count: int):
    """``count`` products with distinct operands in one graph; operands made outside the timing."""
    mx = backend.mx
    a_shape = (k, m) if layout == "tn" else (m, k)
    b_shape = (n, k) if layout == "nt" else (k, n)
    pairs = []
    for i in range(count):
        a, b = backend.randn(a_shape, "float32", seed=2 * i + 1), backend.randn(b_shape, "float32", seed=2 * i + 2)
        a = mx.swapaxes(a, 0, 1) if layout == "tn" else a
        b = mx.swapaxes(b, 0, 1) if layout == "nt" else b
        mx.eval(a, b)
        pairs.append((a, b))
    return lambda: [backend.matmul(a, b) for a, b in pairs]


def run(ctx: ProbeContext, backend: Backend) -> list[Record | Skip]:
    """The grid on one MLX backend."""
    out: list[Record | Skip] = []
    for layout in LAYOUTS:
        best_rate, last_s = 0.0, None
        for m, n, k in grid(ctx.level):
            flop = 2.0 * m * n * k
            count = count_for(m, n, k)
            what = f"float32 matmul {m}x{k}{'ᵀ' if layout == 'tn' else ''}@{k}x{n}{'ᵀ' if layout == 'nt' else ''}"
            estimate = count * flop / best_rate if best_rate > 0 else None
            if too_slow(estimate, last_s, ctx):
                out.append(Skip("blas", backend.framework, backend.device,
                                slow_reason(what, estimate, f"{best_rate / 1e9:.3g} GFLOP/s", ctx)))
                continue
            timing = ctx.measure(backend, _products(backend, layout, m, n, k, count), f"{what} ×{count} in a graph")
            per = timing.median_s / count
            best_rate, last_s = max(best_rate, flop / per), timing.median_s
            out.append(Record("blas", OP, backend.framework, backend.device, "float32",
                              params={"m": m, "n": n, "k": k, "layout": layout, "count": count},
                              metrics={"flop": flop, "in_graph_s": per, "flops_per_s": per_second(flop, per)},
                              timing=timing))
        ctx.progress(f"{backend.name} float32 GEMM shape grid {layout}: best {best_rate / 1e9:.3g} GFLOP/s")
    return out
