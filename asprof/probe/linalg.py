"""`linalg`: the KPOP preconditioner refresh kernels on MLX's CPU stream (KPOP paper §3).

MLX runs ``linalg.eigh`` and ``linalg.qr`` only on the CPU (LAPACK), whatever the accelerator,
so KPOP's refresh is CPU work that may overlap GPU work; the simulator gives it the CPU lane.

* ``eigh`` (params n): eigenvalues and eigenvectors of a symmetric positive-definite n×n
  factor, like KPOP's C = XXᵀ/B + εI.
* ``qr`` (params n): Householder QR of an n×n matrix.
* ``power_step`` (params n): one power-iteration refresh, Q ← qr(M·Q) (matmul then QR), the
  cheaper alternative to a full eigh.

float32 (MLX's eigh takes float32/float64). Metrics ``time_s`` (median) and a nominal ``flop``
with the bundled profiles' conventions (eigh 9n³, qr 4/3·n³, power step 2n³ + 4/3·n³; Golub &
Van Loan §5.2, §8.3) so rates can be compared across machines.
"""

from __future__ import annotations

from asprof.probe.backends import MLXBackend
from asprof.probe.context import ProbeContext, slow_reason, too_slow
from asprof.probe.harness import per_second
from asprof.traces.schema import Record, Skip

NAME = "linalg"
_SIZES = {"full": (64, 128, 256, 512, 1024, 2048), "quick": (64, 128, 256, 512), "tiny": (8, 16)}
OPS = ("eigh", "qr", "power_step")


def flop(op: str, n: int) -> float:
    return {"eigh": 9.0 * n**3, "qr": 4.0 / 3.0 * n**3, "power_step": 2.0 * n**3 + 4.0 / 3.0 * n**3}[op]


def _inputs(backend: MLXBackend, n: int):
    mx = backend.mx
    x = backend.randn((n, 2 * n), "float32", seed=7)
    spd = (x @ x.T) / (2 * n) + 1e-3 * mx.eye(n)  # a well-conditioned factor, like C = XXᵀ/B + εI
    q, _ = mx.linalg.qr(backend.randn((n, n), "float32", seed=8), stream=mx.cpu)
    mx.eval(spd, q)
    return spd, q


def _call(backend: MLXBackend, op: str, m, q):
    mx = backend.mx
    cpu = mx.cpu
    if op == "eigh":
        return lambda: mx.linalg.eigh(m, stream=cpu)
    if op == "qr":
        return lambda: mx.linalg.qr(m, stream=cpu)
    return lambda: mx.linalg.qr(mx.matmul(m, q, stream=cpu), stream=cpu)


def run(ctx: ProbeContext) -> list[Record | Skip]:
    mlx_backends = [b for b in ctx.backends if isinstance(b, MLXBackend)]
    if not mlx_backends:
        return [Skip(NAME, "mlx", "cpu", "mlx is not installed")]
    # The CPU stream is the same whichever MLX device is the default: time it once.
    backend = MLXBackend("cpu")
    out: list[Record | Skip] = []
    best = {op: 0.0 for op in OPS}
    last: dict[str, float | None] = {op: None for op in OPS}
    for n in _SIZES[ctx.level]:
        m, q = _inputs(backend, n)
        for op in OPS:
            estimate = flop(op, n) / best[op] if best[op] > 0 else None
            if too_slow(estimate, last[op], ctx):
                out.append(Skip(NAME, "mlx", "cpu",
                                slow_reason(f"{op} n={n}", estimate, f"{best[op] / 1e9:.3g} GFLOP/s", ctx)))
                continue
            timing = ctx.measure(backend, _call(backend, op, m, q), f"{op} n={n}")
            rate = per_second(flop(op, n), timing.median_s)
            best[op] = max(best[op], rate)
            last[op] = timing.median_s
            out.append(Record(NAME, op, "mlx", "cpu", "float32", params={"n": n},
                              metrics={"time_s": timing.median_s, "flop": flop(op, n)}, timing=timing))
            ctx.progress(f"mlx/cpu {op} n={n}: {timing.median_s * 1e3:.3g} ms")
    return out
