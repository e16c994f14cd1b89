"""`memory`: RSS, page faults and step time over a real training loop (profiling paper §4.3).

The paper found RSS growing step after step on Apple silicon (unified memory is paged in as
the training touches it, Fig. 3–4) and page faults rising near capacity, with step time
becoming unsteady. This probe trains a small MLP regressor with Adam for ≥ 50 steps on each
backend (MLX, and PyTorch where installed) and records, after every step, the process RSS and
the minor / major page faults that step caused (``getrusage``), next to the step time.

Series (one value per step): ``rss_bytes``, ``minor_faults``, ``major_faults``, ``step_s``.
Metrics: ``rss_start_bytes`` (after the first step), ``rss_end_bytes``, ``rss_peak_bytes``,
``rss_growth_bytes`` (end − start), ``minor_faults_per_step`` and ``major_faults_per_step``
(mean over the steps after the first), ``median_step_s``, ``steps``. ``timing`` holds the step
times after the first (the first step, which allocates everything, is ``first_s``).
"""

from __future__ import annotations

import statistics

import psutil

from asprof.probe.backends import MLXBackend, TorchBackend
from asprof.probe.context import ProbeContext
from asprof.probe.harness import summarize
from asprof.traces.schema import Record, Skip

NAME = "memory"
# (input, hidden, batch, steps)
_SHAPE = {"full": (512, 1024, 64, 200), "quick": (256, 512, 64, 50), "tiny": (16, 32, 8, 50)}


def _faults() -> tuple[int, int]:
    try:
        import resource
    except ImportError:  # Windows: no getrusage
        return 0, 0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_majflt


def _mlx_loop(backend: MLXBackend, d: int, h: int, batch: int):
    """Returns (step(i) -> value to sync, parameter count)."""
    mx = backend.mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    model = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))
    opt = optim.Adam(learning_rate=1e-3)
    x = backend.randn((batch, d), seed=1)
    y = backend.randn((batch, d), seed=2)
    mx.eval(model.parameters())

    def loss_fn(m, x_, y_):
        return ((m(x_) - y_) ** 2).mean()

    grad_fn = nn.value_and_grad(model, loss_fn)

    def step(i):
        with mx.stream(backend.stream):
            loss, grads = grad_fn(model, x, y)
            opt.update(model, grads)
        return [loss, model.parameters(), opt.state]

    count = sum(v.size for _, v in tree_flatten(model.parameters()))
    return step, count


def _torch_loop(backend: TorchBackend, d: int, h: int, batch: int):
    t = backend.torch
    dev = backend.device
    t.manual_seed(0)
    model = t.nn.Sequential(t.nn.Linear(d, h), t.nn.ReLU(), t.nn.Linear(h, h), t.nn.ReLU(),
                            t.nn.Linear(h, d)).to(dev)
    opt = t.optim.Adam(model.parameters(), lr=1e-3)
    x = backend.randn((batch, d), seed=1)
    y = backend.randn((batch, d), seed=2)

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return step, sum(p.numel() for p in model.parameters())


def run(ctx: ProbeContext) -> list[Record | Skip]:
    out: list[Record | Skip] = list(ctx.absent_skips(NAME))
    d, h, batch, steps = _SHAPE[ctx.level]
    proc = psutil.Process()
    for backend in ctx.backends:
        if isinstance(backend, MLXBackend):
            step, nparams = _mlx_loop(backend, d, h, batch)
        else:
            step, nparams = _torch_loop(backend, d, h, batch)
        rss: list[float] = []
        minor: list[float] = []
        major: list[float] = []
        last = list(_faults())

        def after(i):
            rss.append(float(proc.memory_info().rss))
            now = _faults()
            minor.append(float(now[0] - last[0]))
            major.append(float(now[1] - last[1]))
            last[:] = now
            if (i + 1) % 10 == 0:
                ctx.progress(f"{backend.name} training step {i + 1}/{steps}")

        step_s = ctx.harness.time_steps(step, steps, backend.sync, after=after)
        timing = summarize(step_s[1:], first_s=step_s[0], config=ctx.harness.config,
                           what=f"{backend.name} training step")
        later = slice(1, None)
        metrics = {
            "steps": float(steps),
            "rss_start_bytes": rss[0],
            "rss_end_bytes": rss[-1],
            "rss_peak_bytes": max(rss),
            "rss_growth_bytes": rss[-1] - rss[0],
            "minor_faults_per_step": statistics.fmean(minor[later]),
            "major_faults_per_step": statistics.fmean(major[later]),
            "median_step_s": timing.median_s,
        }
        out.append(Record(
            NAME, "training_loop", backend.framework, backend.device, "float32",
            params={"model": "mlp", "input": d, "hidden": h, "batch": batch, "steps": steps,
                    "parameters": int(nparams), "optimizer": "adam"},
            metrics=metrics, timing=timing,
            series={"rss_bytes": tuple(rss), "minor_faults": tuple(minor), "major_faults": tuple(major),
                    "step_s": tuple(step_s)},
        ))
    return out
