"""Adam's update with its state in cache and with it evicted, against the simulator's price.

In a training step the optimizer update reads the parameters, gradients and Adam moments right
after the forward and backward passes have streamed the activations through the caches, so
they come from memory; the membw probe (and with it the simulator's price of the update) times
kernels repeated on the same arrays, which stay in cache. This runs the eager Adam update
(asprof.optimizers.base.adam_step and w + Δ, as Adam runs off Metal) over the parameter arrays
of a model preset, one evaluation per step as in the optimizer phase, with the arrays warm
(back to back) and cold (a --evict-mb buffer written in between), side by side in one run; with
--trace, also the update the simulator prices from that trace (docs/validate.md §6).

    python benchmarks/bench_adam_cold.py --model kpop-1.7m
    python benchmarks/bench_adam_cold.py --model tiny --trace bench-traces/…/vm-1r-….json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="kpop-1.7m", help="model preset")
    ap.add_argument("--repeats", type=int, default=25, help="timed updates per way")
    ap.add_argument("--evict-mb", type=float, default=64.0, help="buffer written between cold updates")
    ap.add_argument("--trace", help="a trace: print the simulator's price of the update too")
    args = ap.parse_args(argv)

    import mlx.core as mx

    from asprof.optimizers.base import adam_step
    from asprof.simulate import Workload
    from asprof.spec import RunSpec

    mc = RunSpec(args.model).model_config()  # as asprof train and validate build it
    arrays = Workload(mc, batch=1, seq=mc.seq_len).param_arrays()
    state = [(mx.random.normal((n,)), mx.zeros((n,)), mx.full((n,), 0.01), mx.random.normal((n,)))
             for _, n, _ in arrays]
    big = mx.random.normal((int(args.evict_mb * 2**20) // 4,))
    lr = mx.array(1e-3)
    mx.eval(state, big)

    def update():
        nonlocal state
        out, new = [], []
        for g, m, v, w in state:
            d, m2, v2 = adam_step(g, m, v, lr, 5, 0.9, 0.999, 1e-8, True)
            new.append((g, m2, v2, w + d))
            out += [m2, v2, new[-1][3]]
        mx.eval(out)
        state = new

    times = {"warm": [], "cold": []}
    for _ in range(3):
        update()
    for i in range(args.repeats):
        for way in ("warm", "cold"):  # interleaved: a drift of the machine hits both alike
            if way == "cold":
                mx.eval(big * 1.0001)
            else:
                update()  # once untimed, so the timed one finds the arrays it just wrote
            t0 = time.perf_counter()
            update()
            times[way].append(time.perf_counter() - t0)
    elements = sum(n for _, n, _ in arrays)
    print(f"Adam update of {args.model} ({len(arrays)} arrays, {elements:,} parameters), eager, "
          f"median of {args.repeats} (ms):")
    warm, cold = (statistics.median(times[w]) for w in ("warm", "cold"))
    print(f"  state in cache   {warm * 1e3:8.2f}")
    print(f"  state evicted    {cold * 1e3:8.2f}   ({cold / warm:.2f} x)")
    if args.trace:
        from asprof.simulate import HardwareModel
        from asprof.simulate.costs import OptimizerSpec, plan_step
        from asprof.simulate.workload import ops_time
        from asprof.traces.io import load_trace

        hw = HardwareModel.from_trace(load_trace(args.trace))
        plan = plan_step(Workload(mc, batch=1, seq=mc.seq_len), OptimizerSpec("adam"), 1)
        price = ops_time(hw, plan.update_eager) + hw.launch_s
        print(f"  simulator        {price * 1e3:8.2f}   ({price / cold:.2f} x evicted; trace {args.trace})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
