"""The sweep plot: step time and bytes sent per node against node count (or sparsity).

Returns PNG bytes; the caller writes them. Matplotlib is imported here only, with the
non-interactive Agg backend, so the simulator core never needs it.
"""

from __future__ import annotations

import io

from asprof.simulate.session import SimulationReport


def sweep_png(rep: SimulationReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_nodes = len(rep.config.nodes) > 1
    backends = list(dict.fromkeys(p.backend for p in rep.predictions))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax_t, ax_tok, ax_b = axes
    labels = list(dict.fromkeys(r.label for p in rep.predictions for r in p.results))
    if by_nodes:
        styles = ("-", "--", "-.", ":")
        for bi, backend in enumerate(backends):
            preds = [p for p in rep.predictions if p.backend == backend]
            xs = [p.nodes for p in preds]
            for li, label in enumerate(labels):
                rs = [next(r for r in p.results if r.label == label) for p in preds]
                name = f"{label} ({backend})" if len(backends) > 1 else label
                kw = dict(marker="o", color=f"C{li}", ls=styles[bi % len(styles)], label=name)
                ax_t.plot(xs, [r.mean_s * 1e3 for r in rs], **kw)
                if len(backends) == 1 and any(r.p95_s > r.mean_s * 1.001 for r in rs):
                    ax_t.plot(xs, [r.p95_s * 1e3 for r in rs], ls=":", color=f"C{li}", alpha=0.8)
                ax_tok.plot(xs, [r.tokens_per_s for r in rs], **kw)
                ax_b.plot(xs, [r.bytes_sent["total"] / 2**20 for r in rs], **kw)
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel("nodes")
        ax_tok.set_yscale("log")
    else:
        p = rep.predictions[0]
        top = [r for r in p.results if r.name == "topkpop"]
        xs = [r.sparsity for r in top]
        ax_t.plot(xs, [r.mean_s * 1e3 for r in top], marker="o", label="topkpop")
        ax_tok.plot(xs, [r.tokens_per_s for r in top], marker="o", label="topkpop")
        ax_b.plot(xs, [r.bytes_sent["total"] / 2**20 for r in top], marker="o", label="topkpop")
        for r in p.results:
            if r.name != "topkpop":
                ax_t.axhline(r.mean_s * 1e3, ls="--", color="C1" if r.name == "kpop" else "C2", label=r.name)
                ax_tok.axhline(r.tokens_per_s, ls="--", color="C1" if r.name == "kpop" else "C2", label=r.name)
                ax_b.axhline(r.bytes_sent["total"] / 2**20, ls="--", color="C1" if r.name == "kpop" else "C2",
                             label=r.name)
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel(f"TopKPOP sparsity s ({p.nodes} nodes)")
    ax_t.set_ylabel("step time, ms (solid: mean, dotted: p95)" if by_nodes else "mean step time, ms")
    ax_tok.set_ylabel("tokens / s (cluster)")
    ax_b.set_ylabel("MiB sent per node per step")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    w, t = rep.workload, rep.trace
    batch = (f"global batch {rep.config.run.global_batch}×{w.seq}" if rep.config.run.global_batch is not None
             else f"batch {w.batch}×{w.seq} per node")
    fig.suptitle(f"asprof simulate: {rep.model.name}, {batch}, {t.label}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
