"""Loss and step-time plots of a training result (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

from asprof.train.result import TrainResult


def plot_result(result: TrainResult, path: str | Path) -> Path:
    """Training loss per step with the validation points, and step time per step (with the
    instrumented pass's phases stacked underneath when there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    label = cfg["optimizer"] + (f" s={cfg['sparsity']:g}" if cfg["optimizer"] == "topkpop" else "")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = range(1, len(result.losses) + 1)
    ax1.plot(steps, result.losses, lw=1, label=f"train ({label})")
    if result.val_losses:
        vs, vl = zip(*result.val_losses)
        ax1.plot(vs, vl, "o-", ms=4, label="validation")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy (nats / byte)")
    ax1.set_title(f"{result.model['name']} · {result.world_size} rank(s) · lr {cfg['learning_rate']:g}")
    ax1.legend()
    ax1.grid(alpha=0.3)

    ax2.plot(steps, [t * 1e3 for t in result.step_time_s], lw=1, label="step (timed pass)")
    if result.phases_s:
        names = ["fwd_bwd", "factor_ema", "refresh", "grad_allreduce", "optimizer"]
        bottom = [0.0] * len(result.phases_s)
        for name in names:
            vals = [p.get(name, 0.0) * 1e3 for p in result.phases_s]
            if any(vals):
                ax2.bar(steps, vals, bottom=bottom, width=1.0, alpha=0.5, label=name)
                bottom = [b + v for b, v in zip(bottom, vals)]
    for s in result.refresh_steps:
        ax2.axvline(s + 1, color="grey", lw=0.5, alpha=0.3)
    ax2.set_xlabel("step (grey lines: refreshes)")
    ax2.set_ylabel("ms")
    ax2.set_title(f"{result.summary['tokens_per_s']:.0f} tokens/s, "
                  f"{result.summary['step_time_median_s'] * 1e3:.0f} ms/step (median)")
    ax2.legend(fontsize=8, title="bars: instrumented pass" + (", rank 0" if result.world_size > 1 else "")
               if result.phases_s else None, title_fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
