"""A training step's GEMMs, measured one by one, against the simulator's two ways of pricing them
(docs/validate.md §6.3): the square sweep at the same flop count, and the shape grid.

Builds the step the simulator plans (model, batch and sequence per node, optimizer, nodes), times
each of its forward and backward GEMMs on its own inside a graph (10 products per evaluation,
median of 7), and prints per GEMM the two prices and the measurement, then the sums, the priced
rest of fwd+bwd, and the fwd+bwd phase of a real instrumented training step. The prices come from
--trace; a trace without a shape grid gets one measured now (the blas probe's grid at --level).
To see a K-rank cluster's conditions on one machine, run K copies at once.

    python benchmarks/bench_step_gemms.py --trace traces/vm-2r-loopback-….json
    python benchmarks/bench_step_gemms.py --trace T & python benchmarks/bench_step_gemms.py --trace T   # 2 ranks' load
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx.core as mx  # noqa: E402

from asprof.simulate import HardwareModel  # noqa: E402
from asprof.simulate.costs import OptimizerSpec, plan_step  # noqa: E402
from asprof.simulate.workload import Workload, op_time  # noqa: E402
from asprof.spec import RunSpec  # noqa: E402
from asprof.traces.io import load_trace  # noqa: E402
from asprof.traces.schema import Record  # noqa: E402


def time_alone(op, reps: int = 10, repeats: int = 7) -> float:
    """Seconds for one instance of GEMM ``op`` (its ``batch`` included), inside a graph."""
    sh = (lambda r, c: (op.batch, r, c)) if op.batch > 1 else (lambda r, c: (r, c))
    t = lambda x: mx.swapaxes(x, -1, -2)  # noqa: E731
    if op.layout == "nt":
        a, b = mx.random.normal(sh(op.m, op.k)), mx.random.normal(sh(op.n, op.k))
        f = lambda: a @ t(b)  # noqa: E731
    elif op.layout == "tn":
        a, b = mx.random.normal(sh(op.k, op.m)), mx.random.normal(sh(op.k, op.n))
        f = lambda: t(a) @ b  # noqa: E731
    else:
        a, b = mx.random.normal(sh(op.m, op.k)), mx.random.normal(sh(op.k, op.n))
        f = lambda: a @ b  # noqa: E731
    mx.eval(a, b)
    mx.eval([f() for _ in range(reps)])  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval([f() for _ in range(reps)])
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


def with_shape_grid(trace, level: str):
    if trace.probe("blas", op="matmul_shape"):
        return trace, "the trace's"
    from asprof.probe import blas_shapes
    from asprof.probe.backends import discover
    from asprof.probe.context import ProbeContext
    from asprof.probe.harness import LEVELS, Harness

    backends, absent = discover(("mlx",))
    ctx = ProbeContext(level=level, harness=Harness(LEVELS[level]), backends=backends, absent=absent,
                       extra={"dtypes": ("float32",), "cold": False})
    backend = next(b for b in backends if b.framework == "mlx")
    t0 = time.perf_counter()
    recs = [r for r in blas_shapes.run(ctx, backend) if isinstance(r, Record)]
    device = trace.probe("blas", op="matmul")[0].device  # the device the trace's sweep was labelled with
    grid = tuple(replace(r, device=device) for r in recs)
    return replace(trace, records=trace.records + grid), f"measured now ({len(grid)} shapes, {time.perf_counter() - t0:.0f} s)"


def fwd_bwd_measured(model: str, batch: int, seq: int, optimizer: str, steps: int = 30, skip: int = 5) -> float:
    from asprof.train.config import TrainConfig
    from asprof.train.data import load_corpus
    from asprof.train.loop import Trainer

    trainer = Trainer(TrainConfig.build(optimizer, steps=steps, model=model, batch=batch, seq=seq, vocab=256, eval_batches=1),
                      load_corpus(None))
    out = []
    for i in range(steps):
        x, y = trainer.batch(i)
        mx.eval(x, y)
        _, phases, _ = trainer.step(x, y, instrument=True)
        if i >= skip:
            out.append(phases["fwd_bwd"])
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", required=True, help="the trace that prices the GEMMs (e.g. one asprof validate probed)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch", type=int, default=8, help="sequences per node")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--nodes", type=int, default=2, help="ranks of the planned step (the all-reduce does not matter here)")
    ap.add_argument("--level", default="quick", help="probe level of a shape grid measured now")
    args = ap.parse_args(argv)

    trace, how = with_shape_grid(load_trace(args.trace), args.level)
    square, shaped = HardwareModel.from_trace(trace, gemm_shapes=False), HardwareModel.from_trace(trace, gemm_shapes=True)
    mc = RunSpec(args.model, batch=args.batch, seq=args.seq, vocab=256).model_config()  # as the grid trains it
    plan = plan_step(Workload(mc, batch=args.batch, seq=args.seq), OptimizerSpec(args.optimizer), args.nodes)
    ops = list(plan.forward) + list(plan.backward)
    print(f"bench_step_gemms: {args.model}, {args.batch} x {args.seq} per node, {args.optimizer}; prices from "
          f"{args.trace} (shape grid: {how})")
    print(f"{'GEMM':30s} {'layout':6s} {'m x n x k':>15s} {'batch':>5s} {'x':>3s}  {'square':>8s} {'grid':>8s} "
          f"{'measured':>8s}  square/meas  grid/meas")
    sums = {"square": 0.0, "grid": 0.0, "measured": 0.0}
    rest = 0.0
    for op in ops:
        if op.kind != "gemm":
            rest += op_time(square, op)
            continue
        s, g, m = op_time(square, op), op_time(shaped, op), time_alone(op) * op.count
        sums["square"] += s
        sums["grid"] += g
        sums["measured"] += m
        print(f"{op.name[:30]:30s} {op.layout:6s} {f'{op.m}x{op.n}x{op.k}':>15s} {op.batch:5d} {op.count:3d}  "
              f"{s * 1e3:6.2f}ms {g * 1e3:6.2f}ms {m * 1e3:6.2f}ms  {s / m:11.2f}  {g / m:9.2f}", flush=True)
    print(f"step GEMMs: square sweep {sums['square'] * 1e3:.1f} ms, shape grid {sums['grid'] * 1e3:.1f} ms, measured "
          f"{sums['measured'] * 1e3:.1f} ms (ratios {sums['square'] / sums['measured']:.2f}, "
          f"{sums['grid'] / sums['measured']:.2f})")
    fb = fwd_bwd_measured(args.model, args.batch, args.seq, args.optimizer)
    print(f"fwd+bwd: the rest priced {rest * 1e3:.1f} ms; a real instrumented step's fwd_bwd {fb * 1e3:.1f} ms, less "
          f"the GEMMs measured: {(fb - sums['measured']) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
