"""Step time of KPOP and TopKPOP relative to Adam, at refresh frequency f = 10 and f = 100, measured
side by side in one run, on the byte-level `small` model and the KPOP paper's kpop-1.7m; the time
of one refresh, TopKPOP's against KPOP's; and each optimizer's state bytes next to the closed form.

Every configuration of a model trains the same model on the same batches. After the warm-up
(KPOP's every-step refreshes, ``--warmup`` steps, untimed) the timed window of each configuration
covers exactly ``window / f`` refreshes (t = warmup .. warmup + window - 1), so its mean step time
is the true amortised cost. The configurations of *both* models take turns in blocks of
``--block`` steps, so a busy machine slows them all alike. Then the refreshes alone: KPOP's and
TopKPOP's (f = 10 runs) called in turn on their current factors, ``--refreshes`` times each. An
instrumented pass then shows where the extra time goes.

    python benchmarks/bench_optimizers_speed.py                 # small (vocab 256) + kpop-1.7m (vocab 8192)
    python benchmarks/bench_optimizers_speed.py --json          # also the ratios as one JSON line at the end
    python benchmarks/bench_optimizers_speed.py --models small --window100 0

Every process runs on the BLAS it was started with (printed); on Linux, MLX's CPU wheel links the
reference BLAS, so preload OpenBLAS for realistic numbers (asprof's launched ranks do it for you):
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3:/usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import mlx.core as mx

from asprof.optimizers.accounting import closed_form_state_bytes, state_bytes
from asprof.probe.host import mlx_blas
from asprof.train.config import TrainConfig
from asprof.train.data import load_corpus
from asprof.train.loop import PHASES, Trainer

# The vocabulary each model is measured with: bytes for `small`, the paper's 8192 for kpop-1.7m
# (its tied head then dominates the compute, as in the paper); others: bytes.
VOCAB = {"small": 256, "kpop-1.7m": 8192}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="small,kpop-1.7m", help="comma-separated presets, measured side by side")
    ap.add_argument("--vocab", type=int, default=None, help="one vocabulary for every model (default: VOCAB)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--sparsity", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--window10", type=int, default=50, help="timed steps at f = 10")
    ap.add_argument("--window100", type=int, default=100, help="timed steps at f = 100 (0: no f = 100 rows)")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--refreshes", type=int, default=6, help="refreshes timed alone per optimizer")
    ap.add_argument("--instrument-steps", type=int, default=10)
    ap.add_argument("--eig-method", default="auto", help="KPOP/TopKPOP eig_method (auto, eigh, power, subspace)")
    ap.add_argument("--json", action="store_true", help="print the ratios as one JSON object at the end")
    return ap.parse_args()


class Run:
    def __init__(self, model, label, config: TrainConfig, corpus, window):
        self.model, self.label, self.config, self.window = model, label, config, window
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


def model_runs(model: str, a, corpus) -> list[Run]:
    common = dict(model=model, vocab=a.vocab or VOCAB.get(model, 256), batch=a.batch, seq=a.seq, warmup=a.warmup,
                  steps=a.warmup + max(a.window10, a.window100), lr=1e-3)
    specs = [("adam", dict(optimizer="adam"), max(a.window10, a.window100))]
    for f, w in ((10, a.window10), (100, a.window100)):
        if w > 0:
            specs.append((f"kpop f={f}", dict(optimizer="kpop", frequency=f, eig_method=a.eig_method), w))
            specs.append((f"topkpop s={a.sparsity:g} f={f}",
                          dict(optimizer="topkpop", frequency=f, sparsity=a.sparsity, eig_method=a.eig_method), w))
    return [Run(model, label, TrainConfig.build(**common, **kw), corpus, w) for label, kw, w in specs]


def time_refreshes(kpop: Run, topkpop: Run, n: int) -> tuple[float, float]:
    """Median seconds of one refresh (factor EMAs evaluated first), the two optimizers in turn."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(n):
        for i, r in enumerate((kpop, topkpop)):
            mx.eval(r.trainer.opt.state)
            t0 = time.perf_counter()
            r.trainer.opt.refresh()
            times[i].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def main():
    a = parse()
    corpus = load_corpus()
    models = [m for m in a.models.split(",") if m]
    runs = [r for m in models for r in model_runs(m, a, corpus)]
    print(f"mlx {mx.__version__}, metal={mx.metal.is_available()}, BLAS {mlx_blas()[0]} (every configuration, "
          f"one process); batch {a.batch} x {a.seq} tokens; eig_method {a.eig_method}")
    for m in models:
        cfg = next(r for r in runs if r.model == m).trainer.cfg
        print(f"model {cfg.name}: {cfg.layers} layers, hidden {cfg.hidden}, ffn {cfg.ffn}, heads {cfg.heads}, "
              f"vocab {cfg.vocab}")
    t_start = time.monotonic()
    print(f"load average at the start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
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
    print(f"\ntimed in {time.monotonic() - t_start:.0f} s (blocks of {a.block} steps, configurations of all models "
          f"interleaved); load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    out = {"kpop_over_adam": {}, "kpop_over_adam_median": {}, "topkpop_over_adam": {},
           "topkpop_refresh_over_kpop_by_model": {}, "refresh_ms": {}, "blas": mlx_blas()[0],
           "load_average": os.getloadavg()[0]}
    print(f"{'model':<11}{'optimizer':<22}{'steps':>6}{'refreshes':>10}{'mean ms':>9}{'median ms':>10}"
          f"{'refresh step ms':>16}{'ratio (mean)':>13}{'ratio (median)':>15}{'state MiB':>11}{'closed form':>12}")
    for m in models:
        mr = [r for r in runs if r.model == m]
        adam_mean, adam_median = statistics.fmean(mr[0].times), statistics.median(mr[0].times)
        for r in mr:
            mean = statistics.fmean(r.times)
            refresh = statistics.fmean(r.refresh_times) * 1e3 if r.refresh_times else float("nan")
            sb = state_bytes(r.trainer.opt)
            cf = closed_form_state_bytes(r.trainer.cfg, r.config.optimizer, r.config.sparsity)
            print(f"{m:<11}{r.label:<22}{len(r.times):>6}{len(r.refresh_times):>10}{mean * 1e3:>9.1f}"
                  f"{statistics.median(r.times) * 1e3:>10.1f}{refresh:>16.1f}{mean / adam_mean:>12.2f}x"
                  f"{statistics.median(r.times) / adam_median:>14.2f}x"
                  f"{sb / 2**20:>11.3f}{cf / 2**20:>12.3f}{'' if sb == cf else '  MISMATCH'}")
        out["kpop_over_adam"][m] = round(statistics.fmean(mr[1].times) / adam_mean, 3)
        out["kpop_over_adam_median"][m] = round(statistics.median(mr[1].times) / adam_median, 3)
        out["topkpop_over_adam"][m] = round(statistics.fmean(mr[2].times) / adam_mean, 3)
    print()
    for m in models:
        mr = [r for r in runs if r.model == m]
        k_s, t_s = time_refreshes(mr[1], mr[2], a.refreshes)
        out["refresh_ms"][m] = {"kpop": round(k_s * 1e3, 2), "topkpop": round(t_s * 1e3, 2)}
        out["topkpop_refresh_over_kpop_by_model"][m] = round(t_s / k_s, 3)
        print(f"{m}: one refresh, median of {a.refreshes} (in turn): KPOP {k_s * 1e3:.1f} ms, "
              f"TopKPOP s={a.sparsity:g} {t_s * 1e3:.1f} ms ({t_s / k_s:.2f}x)")
    out["topkpop_refresh_over_kpop"] = out["topkpop_refresh_over_kpop_by_model"][models[0]]
    goals = {"small": 1.25, "kpop-1.7m": 1.10}
    for m in models:
        g = goals.get(m, 1.10)
        x = out["kpop_over_adam"][m]
        print(f"goal KPOP <= {g:.2f}x Adam at f = 10 on {m}: {'met' if x <= g else 'NOT met'} ({x:.2f}x)")
    z = out["topkpop_refresh_over_kpop"]
    print(f"goal TopKPOP refresh <= 0.5x KPOP's ({models[0]}): {'met' if z <= 0.5 else 'NOT met'} ({z:.2f}x)")

    # Where the time goes: one instrumented window per optimizer (phase syncs change timing a little).
    print(f"\nphases, mean ms per step over {a.instrument_steps} instrumented steps (f = 10 runs, refresh amortised):")
    print(f"{'model':<11}{'optimizer':<22}" + "".join(f"{p:>15}" for p in PHASES) + f"{'sum':>10}")
    for m in models:
        for r in [r for r in runs if r.model == m][:3]:
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
            print(f"{m:<11}{r.label:<22}" + "".join(f"{sums[p] / n * 1e3:>15.1f}" for p in PHASES) +
                  f"{sum(sums.values()) / n * 1e3:>10.1f}")

    compile_check(runs[0].trainer.model)
    if a.json:
        print(json.dumps(out))


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
