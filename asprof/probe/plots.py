"""PNG plots of a trace for `asprof plot` (matplotlib, non-interactive Agg backend).

One figure per probe present: throughput vs size per framework/device/dtype, launch latency,
bandwidth vs size, linear algebra time vs n, memory and step time over training steps, and
all-reduce bandwidth vs size with the fitted ring model.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from asprof.traces.schema import Record, Trace
from asprof.units import nbytes, seconds, si

_DTYPE_STYLE = {"float32": ("-", "o"), "float16": ("--", "s"), "bfloat16": (":", "^")}
_MARKERS = "osD^v<>ph"
_KIND_STYLE = {"cold": (0.45, "//"), "warm": (1.0, None), "graph": (0.75, "..")}  # launch bars: alpha, hatch


def plot_trace(trace: Trace, out_dir: str | Path, stem: str = "trace") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    title = _title(trace)
    for name, fn in (("blas", _blas), ("launch", _launch), ("membw", _membw), ("linalg", _linalg),
                     ("memory", _memory), ("allreduce", _allreduce)):
        recs = [r for r in trace.probe(name) if r.op != "peak"]
        if not recs:
            continue
        fig = fn(plt, recs)
        fig.suptitle(f"{title}: {name}", fontsize=11)
        fig.tight_layout()
        path = out / f"{stem}-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _title(trace: Trace) -> str:
    h = trace.host
    what = trace.name or h.hostname
    blas = h.blas.get("mlx")
    return f"{what} ({h.chip}" + (f", MLX BLAS {blas}" if blas else "") + ")"


def _backend(r: Record) -> str:
    return f"{r.framework}/{r.device}"


def _colors(keys) -> dict:
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {k: cycle[i % len(cycle)] for i, k in enumerate(keys)}


def _unique(items):
    seen = []
    for x in items:
        if x not in seen:
            seen.append(x)
    return seen


def _blas(plt, recs: list[Record]):
    ops = [op for op in ("matmul", "matvec", "vjp") if any(r.op == op for r in recs)]
    fig, axes = plt.subplots(1, len(ops), figsize=(5.2 * len(ops), 4.4), squeeze=False)
    colors = _colors(_unique(_backend(r) for r in recs))
    for ax, op in zip(axes[0], ops):
        series = defaultdict(list)
        batched = []
        for r in recs:
            if r.op != op:
                continue
            if op == "matmul" and int(r.params.get("batch", 1)) > 1:
                batched.append(r)
                continue
            x = int(r.params["n"]) if op == "matmul" else int(r.params["m"])
            series[(_backend(r), r.dtype)].append((x, r.metrics["flops_per_s"] / 1e9))
        for (backend, dtype), pts in series.items():
            pts.sort()
            ls, marker = _DTYPE_STYLE.get(dtype, ("-", "o"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker=marker, ms=5,
                    color=colors[backend], label=f"{backend} {dtype}")
        for r in batched:
            ax.plot([int(r.params["n"])], [r.metrics["flops_per_s"] / 1e9], marker="*", ms=12, ls="none",
                    color=colors[_backend(r)], markeredgecolor="black", markeredgewidth=0.5)
        if batched:
            ax.plot([], [], marker="*", ls="none", color="gray", ms=10,
                    label=f"batched {batched[0].params['batch']}x{batched[0].params['n']}^2")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("m = n = k" if op == "matmul" else "m = n (matrix m x n)")
        ax.set_ylabel("GFLOP/s (decimal)")
        ax.set_title({"matmul": "matrix-matrix", "matvec": "matrix-vector", "vjp": "vector-Jacobian (fwd+bwd)"}[op])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best", handlelength=3)
    return fig


def _launch(plt, recs: list[Record]):
    import numpy as np

    ops = _unique(str(r.params.get("op", "?")) for r in recs)
    groups = _unique((_backend(r), r.op) for r in recs)
    colors = _colors(_unique(_backend(r) for r in recs))
    vals = {(str(r.params.get("op")), _backend(r), r.op): r for r in recs}
    fig, ax = plt.subplots(figsize=(max(9.0, 0.45 * len(ops) * len(groups)), 5.2))
    width = 0.8 / len(groups)
    x = np.arange(len(ops))
    for i, (backend, kind) in enumerate(groups):
        ys, lo, hi = [], [], []
        for op in ops:
            r = vals.get((op, backend, kind))
            y = r.metrics["latency_s"] * 1e6 if r else np.nan
            ys.append(y)
            if r and r.timing and len(r.timing.samples_s) > 1 and r.timing.median_s > 0:
                # quartiles of the samples, scaled like the metric (a graph's samples are whole chains)
                q = np.percentile(r.timing.samples_s, [25, 75]) * (y / r.timing.median_s)
                lo.append(max(y - q[0], 0))
                hi.append(max(q[1] - y, 0))
            else:
                lo.append(0)
                hi.append(0)
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, ys, width, yerr=[lo, hi], capsize=2,
               color=colors[backend], alpha=_KIND_STYLE.get(kind, (1.0, None))[0],
               hatch=_KIND_STYLE.get(kind, (1.0, None))[1], edgecolor="black", linewidth=0.4, label=f"{backend} {kind}")
    ax.set_xticks(x, ops)
    ax.set_yscale("log")
    ax.set_ylabel("latency per op, us (median; bars: IQR)")
    ax.set_title("tiny-op latency: cold = first call in a fresh process, warm = repeated (synced each),\n"
                 "graph = per op inside one chain synced once", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(groups), 3), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    return fig


def _byte_ticks(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: nbytes(x).replace(".0 ", " ")))
    ax.tick_params(axis="x", labelrotation=30)


def _membw(plt, recs: list[Record]):
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    colors = _colors(_unique(_backend(r) for r in recs))
    series = defaultdict(list)
    for r in recs:
        series[(_backend(r), r.op)].append((int(r.params["bytes"]), r.metrics["bytes_per_s"] / 1e9))
    for (backend, op), pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if op == "copy" else "--",
                marker="o" if op == "copy" else "s", ms=4, color=colors[backend], label=f"{backend} {op}")
    ax.set_xscale("log", base=2)
    _byte_ticks(ax)
    ax.set_xlabel("array size (float32)")
    ax.set_ylabel("GB/s (decimal; copy 2x, triad 3x bytes)")
    ax.set_title("memory bandwidth: copy and triad")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _linalg(plt, recs: list[Record]):
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    series = defaultdict(list)
    for r in recs:
        series[(_backend(r), r.op)].append((int(r.params["n"]), r.metrics["time_s"] * 1e3))
    for i, ((backend, op), pts) in enumerate(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS[i % len(_MARKERS)], ms=4,
                label=f"{backend} {op}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n (n x n, float32)")
    ax.set_ylabel("time per call, ms (median)")
    ax.set_title("KPOP refresh kernels on MLX's CPU stream")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _memory(plt, recs: list[Record]):
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 7.5), sharex=True)
    colors = _colors(_unique(_backend(r) for r in recs))
    for r in recs:
        c = colors[_backend(r)]
        steps = range(1, len(r.series.get("step_s", ())) + 1)
        if "rss_bytes" in r.series:
            axes[0].plot(steps, [b / 2**20 for b in r.series["rss_bytes"]], color=c, label=_backend(r))
        if "minor_faults" in r.series:
            axes[1].plot(steps, r.series["minor_faults"], color=c, label=f"{_backend(r)} minor")
        if "major_faults" in r.series:
            axes[1].plot(steps, r.series["major_faults"], color=c, ls="--", label=f"{_backend(r)} major")
        if "step_s" in r.series:
            axes[2].plot(steps, [s * 1e3 for s in r.series["step_s"]], color=c, label=_backend(r))
    axes[0].set_ylabel("RSS, MiB")
    axes[1].set_ylabel("page faults in step")
    axes[1].set_yscale("symlog", linthresh=1)
    axes[2].set_ylabel("step time, ms")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("training step")
    axes[0].set_title("training loop: memory, page faults and step time per step")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    return fig


def _allreduce(plt, recs: list[Record]):
    import numpy as np

    from asprof.probe.allreduce import ring_time
    from asprof.spec import ring_factor

    fig, (bw, tm) = plt.subplots(1, 2, figsize=(11, 5.6))
    sums = defaultdict(list)
    for r in recs:
        if r.op == "all_sum":
            sums[int(r.params["nodes"])].append(r)
    fits = {int(r.params["nodes"]): r for r in recs if r.op == "fit"}
    colors = _colors(sorted(set(sums) | set(fits)))
    for k, rs in sorted(sums.items()):
        rs.sort(key=lambda r: r.params["bytes"])
        s = np.array([r.params["bytes"] for r in rs], dtype=float)
        bw.plot(s, [r.metrics["busbw_Bps"] / 1e9 for r in rs], "-o", ms=4, color=colors[k], label=f"{k} ranks busbw")
        bw.plot(s, [r.metrics["algbw_Bps"] / 1e9 for r in rs], ":s", ms=3, color=colors[k], label=f"{k} ranks algbw")
        tm.plot(s, [r.metrics["time_s"] * 1e3 for r in rs], "o", ms=5, color=colors[k], label=f"{k} ranks measured")
    for k, f in sorted(fits.items()):
        m = f.metrics
        lo = float(f.params.get("min_bytes", 1024))
        hi = float(f.params.get("max_bytes", 2**26))
        grid = np.logspace(np.log10(lo), np.log10(hi), 100)
        model_t = [ring_time(x, k, m["alpha_s"], m["beta_Bps"]) for x in grid]
        tm.plot(grid, [t * 1e3 for t in model_t], "-", color=colors[k],
                label=f"{k} ranks fit: alpha {seconds(m['alpha_s'])}, beta {si(m['beta_Bps'], 'B/s')}, "
                      f"R^2 {m['r2']:.3f}")
        if k in sums:  # the model's busbw, for comparison with the measured points
            busbw = [x / t * ring_factor(k) / 1e9 for x, t in zip(grid, model_t)]
            bw.plot(grid, busbw, "-", lw=0.8, alpha=0.5, color=colors[k])
    for ax in (bw, tm):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _byte_ticks(ax)
        ax.set_xlabel("bytes per rank (float32 payload)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2)
    bw.set_ylabel("GB/s (decimal)")
    bw.set_title("bandwidth: busbw = algbw * 2(K-1)/K (thin: fit)")
    tm.set_ylabel("time per all_sum, ms (median)")
    tm.set_title("time vs size: t = 2(K-1) alpha + 2(K-1)/K S/beta")
    return fig
