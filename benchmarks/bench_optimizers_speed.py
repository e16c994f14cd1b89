"""Step time of KPOP and TopKPOP relative to Adam, at refresh frequency f = 10 and f = 100, measured
side by side in one run; and each optimizer's state bytes next to the closed-form count.

Every configuration trains the same model on the same batches. After the warm-up (KPOP's
every-step refreshes, ``--warmup`` steps, untimed) the timed window of each configuration covers
exactly ``window / f`` refreshes (t = warmup .. warmup + window - 1), so its mean step time is
the true amortised cost. The configurations take turns in blocks of ``--block`` steps so a busy
machine slows them all alike. An instrumented pass then shows where the extra time goes.

    python benchmarks/bench_optimizers_speed.py                  # small model, batch 8 x 128
    python benchmarks/bench_optimizers_speed.py --model kpop-1.7m --vocab 8192   # the paper's model

On Linux, MLX's CPU wheel links the reference BLAS; preload OpenBLAS for realistic numbers:
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3:/usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import mlx.core as mx

from asprof.optimizers.accounting import closed_form_state_bytes, state_bytes
from asprof.train.config import TrainConfig
from asprof.train.data import load_corpus
from asprof.train.loop import PHASES, Trainer


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--vocab", type=int, default=256, help="vocabulary (>256 only reproduces a bigger head's cost)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--sparsity", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--window10", type=int, default=50, help="timed steps at f = 10")
    ap.add_argument("--window100", type=int, default=100, help="timed steps at f = 100")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--instrument-steps", type=int, default=10)
    return ap.parse_args()


class Run:
    def __init__(self, label, config: TrainConfig, corpus, window):
        self.label, self.config, self.window = label, config, window
        self.trainer = Trainer(config, corpus)
        self.t = 0
        self.times: list[float] = []
        self.refresh_times: list[float] = []

    def advance(self, n, timed):
        for _ in range(n):
            x, y = self.trainer.batch(self.t)
            mx.eval(x, y)
            t0 = time.perf_counter()
            _, _, refreshed = self.trainer.step(x, y)
            dt = time.perf_counter() - t0
            if timed:
                self.times.append(dt)
                if refreshed:
                    self.refresh_times.append(dt)
            self.t += 1


def main():
    a = parse()
    corpus = load_corpus()
    common = dict(model=a.model, vocab=a.vocab, batch=a.batch, seq=a.seq, warmup=a.warmup,
                  steps=a.warmup + a.window100, lr=1e-3)
    specs = [("adam", dict(optimizer="adam"), max(a.window10, a.window100))]
    for f, w in ((10, a.window10), (100, a.window100)):
        specs.append((f"kpop f={f}", dict(optimizer="kpop", frequency=f), w))
        specs.append((f"topkpop s={a.sparsity:g} f={f}", dict(optimizer="topkpop", frequency=f, sparsity=a.sparsity), w))
    runs = [Run(label, TrainConfig.build(**common, **kw), corpus, w) for label, kw, w in specs]
    cfg = runs[0].trainer.cfg
    print(f"model {cfg.name}: {cfg.layers} layers, hidden {cfg.hidden}, ffn {cfg.ffn}, heads {cfg.heads}, vocab {cfg.vocab}; "
          f"batch {a.batch} x {a.seq} tokens; mlx {mx.__version__}, metal={mx.metal.is_available()}")
    t_start = time.monotonic()
    print(f"load average at the start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for r in runs:  # untimed: compilation, KPOP's every-step warm-up refreshes
        r.advance(a.warmup, timed=False)
    # Each configuration's blocks are spread evenly over the rounds, so a load spike on the shared
    # machine lands on every configuration in proportion.
    rounds = max(math.ceil(r.window / a.block) for r in runs)
    for k in range(rounds):
        for r in runs:
            blocks = math.ceil(r.window / a.block)
            if (k + 1) * blocks // rounds > k * blocks // rounds:
                r.advance(min(a.block, r.window - len(r.times)), timed=True)
    adam = runs[0]
    adam_mean = statistics.fmean(adam.times)
    adam_median = statistics.median(adam.times)
    print(f"\ntimed in {time.monotonic() - t_start:.0f} s (blocks of {a.block} steps, configurations interleaved); "
          f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print(f"{'optimizer':<22}{'steps':>6}{'refreshes':>10}{'mean ms':>9}{'median ms':>10}{'refresh step ms':>16}"
          f"{'ratio (mean)':>13}{'ratio (median)':>15}{'state MiB':>11}{'closed form':>12}")
    for r in runs:
        mean = statistics.fmean(r.times)
        refresh = statistics.fmean(r.refresh_times) * 1e3 if r.refresh_times else float("nan")
        sb = state_bytes(r.trainer.opt)
        cf = closed_form_state_bytes(r.trainer.cfg, r.config.optimizer, r.config.sparsity)
        print(f"{r.label:<22}{len(r.times):>6}{len(r.refresh_times):>10}{mean * 1e3:>9.1f}"
              f"{statistics.median(r.times) * 1e3:>10.1f}{refresh:>16.1f}{mean / adam_mean:>12.2f}x"
              f"{statistics.median(r.times) / adam_median:>14.2f}x"
              f"{sb / 2**20:>11.3f}{cf / 2**20:>12.3f}{'' if sb == cf else '  MISMATCH'}")
    kpop10 = statistics.fmean(runs[1].times) / adam_mean
    print(f"\ngoal KPOP <= 1.10x Adam at f = 10: {'met' if kpop10 <= 1.10 else 'NOT met'} ({kpop10:.2f}x)")

    # Where the time goes: one instrumented window per optimizer (phase syncs change timing a little).
    print(f"\nphases, mean ms per step over {a.instrument_steps} instrumented steps (f = 10 runs, refresh amortised):")
    print(f"{'optimizer':<22}" + "".join(f"{p:>15}" for p in PHASES) + f"{'sum':>10}")
    for r in (runs[0], runs[1], runs[2]):
        sums = dict.fromkeys(PHASES, 0.0)
        while r.config.optimizer != "adam" and not r.trainer.opt.refresh_due():
            r.advance(1, timed=False)  # start on a refresh step: a 10-step window holds one at f = 10
        for _ in range(a.instrument_steps):
            x, y = r.trainer.batch(r.t)
            mx.eval(x, y)
            _, phases, _ = r.trainer.step(x, y, instrument=True)
            r.t += 1
            for k, v in phases.items():
                sums[k] += v
        n = a.instrument_steps
        print(f"{r.label:<22}" + "".join(f"{sums[p] / n * 1e3:>15.1f}" for p in PHASES) +
              f"{sum(sums.values()) / n * 1e3:>10.1f}")

    compile_check(runs[0].trainer.model)


def compile_check(model, reps: int = 10):
    """The element-wise Adam update over every parameter of the model: eager ops vs one
    ``mx.compile``d kernel (why asprof compiles it on Metal only)."""
    from mlx.utils import tree_flatten

    from asprof.optimizers.base import adam_step, adam_step_compiled

    params = [p for _, p in tree_flatten(model.parameters())]
    g = [mx.random.normal(p.shape) for p in params]
    m = [mx.zeros(p.shape) for p in params]
    v = [mx.zeros(p.shape) for p in params]
    lr, step = mx.array(1e-3), mx.array(3, mx.uint64)
    mx.eval(g, m, v)
    times = {"eager": [], "compiled": []}
    for _ in range(reps):
        for name, fn in (("eager", adam_step), ("compiled", adam_step_compiled)):
            t0 = time.perf_counter()
            mx.eval([fn(a, b, c, lr, step, 0.9, 0.999, 1e-8, True) for a, b, c in zip(g, m, v)])
            times[name].append(time.perf_counter() - t0)
    n = sum(p.size for p in params)
    e, c = (statistics.median(times[k][1:]) for k in ("eager", "compiled"))
    print(f"\nAdam update over {len(params)} arrays ({n / 1e6:.2f} M elements), median of {reps - 1}: "
          f"eager {e * 1e3:.1f} ms, mx.compile {c * 1e3:.1f} ms ({c / e:.2f}x)")


if __name__ == "__main__":
    main()
