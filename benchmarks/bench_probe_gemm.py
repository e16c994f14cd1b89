"""Does the blas probe's matmul figure agree with a plain timing loop? (issue 2, acceptance 3)

In one process, for each square size: the probe's measurement (``asprof.probe.blas.measure_one``
with the full-level harness: its median) and an independent loop — ``time.perf_counter()``
around N calls of ``mx.eval(a @ b)`` after one warm-up call, i.e. a mean — on the same shapes.
The two alternate ``--rounds`` times so that drift in machine load hits both alike; the table
shows the median over rounds of each and their ratio (goal: within 5%). Then the probe's
measurement of one size runs in 3 separate processes and the coefficient of variation of the
3 medians is printed (goal: <= 2%).

    python benchmarks/bench_probe_gemm.py [--sizes 256,512,1024] [--cv-size 512] [--rounds 3]

MLX's default device is used (the GPU on a Mac, the CPU here).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time


def _backend():
    import mlx.core as mx

    from asprof.probe.backends import MLXBackend

    return MLXBackend("gpu" if mx.default_device() == mx.gpu else "cpu")


def probe_timing(n: int, dtype: str):
    from asprof.probe import blas
    from asprof.probe.context import ProbeContext
    from asprof.probe.harness import LEVELS, Harness

    ctx = ProbeContext(level="full", harness=Harness(LEVELS["full"]), backends=[], absent=[])
    return blas.measure_one(ctx, _backend(), "matmul", (n, n, n, 1), dtype).timing


def plain_mean(n: int, dtype: str, target_s: float = 1.0) -> tuple[float, int]:
    """Independent of the harness: perf_counter around N evaluated matmuls."""
    import mlx.core as mx

    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a, b)
    t0 = time.perf_counter()
    mx.eval(a @ b)  # warm-up; also sizes the loop
    one = time.perf_counter() - t0
    reps = max(3, math.ceil(target_s / max(one, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(reps):
        mx.eval(a @ b)
    return (time.perf_counter() - t0) / reps, reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--cv-size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps({"median_s": probe_timing(args.child, args.dtype).median_s}))
        return

    from asprof.probe.host import mlx_blas

    print(f"MLX on {_backend().name}, BLAS {mlx_blas()[0]}, dtype {args.dtype}")
    print(f"{args.rounds} alternating rounds per size; median over rounds of each. The plain loop yields a mean,")
    print("so probe mean / plain mean is the like-for-like ratio; the probe reports its median (robust to outliers).")
    print(f"{'size':>6} {'probe median':>13} {'probe mean':>11} {'plain mean':>11} {'reps':>5} "
          f"{'mean/plain':>11} {'median/plain':>13} {'GFLOP/s':>8}")
    worst = 0.0
    for n in (int(s) for s in args.sizes.split(",")):
        meds, means, plains = [], [], []
        for _ in range(args.rounds):
            t = probe_timing(n, args.dtype)
            meds.append(t.median_s)
            means.append(t.mean_s)
            q, reps = plain_mean(n, args.dtype)
            plains.append(q)
        med, mean, q = (statistics.median(x) for x in (meds, means, plains))
        worst = max(worst, abs(mean / q - 1))
        print(f"{n:>6} {med * 1e3:>11.3f}ms {mean * 1e3:>9.3f}ms {q * 1e3:>9.3f}ms {reps:>5} "
              f"{mean / q:>11.3f} {med / q:>13.3f} {2 * n**3 / med / 1e9:>8.2f}")
    print(f"largest probe-mean vs plain-mean disagreement: {worst:.1%} (goal <= 5%)")

    medians = []
    for _ in range(args.processes):
        out = subprocess.run([sys.executable, __file__, "--child", str(args.cv_size), "--dtype", args.dtype],
                             capture_output=True, text=True, check=True).stdout
        medians.append(json.loads(out.strip().splitlines()[-1])["median_s"])
    cv = statistics.stdev(medians) / statistics.fmean(medians)
    shown = ", ".join(f"{m * 1e3:.2f} ms" for m in medians)
    print(f"GEMM {args.cv_size}^3 median in {args.processes} separate processes: {shown}; CV {cv:.2%} (goal <= 2%)")


if __name__ == "__main__":
    main()
