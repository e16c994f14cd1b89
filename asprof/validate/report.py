"""Rendering a validation: the text table, JSON, and the PNG (predicted vs measured per optimizer
and phase). Builders return text/figures; :func:`write_outputs` is the one place that writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from asprof.validate.compare import PHASES
from asprof.validate.run import ValidationResult

_PHASE_LABEL = {"fwd_bwd": "fwd+bwd", "factor_ema": "factor EMA", "refresh": "refresh",
                "grad_allreduce": "grad all-reduce", "optimizer": "update"}


def _ms(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 1e3:.1f}"


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def render_text(res: ValidationResult, outputs: list[str] | None = None) -> str:
    c = res.config
    first = next(iter(res.comparisons.values()))
    lo, n = first.steps
    seq = res.seq_len
    out = [f"asprof validate: {res.nodes} rank{'s' if res.nodes > 1 else ''}, link {res.link}; model {c['run']['model']} "
           f"(vocab {res.vocab}), batch {res.batch} x {seq} per node; steps {lo}..{n - 1} of {n} compared "
           f"(first {lo} excluded)",
           f"trace: {res.trace.path} ({res.trace.how})", ""]
    rows = []
    for label, cmp in res.comparisons.items():
        rows.append([label, _ms(cmp.measured_mean_s), _ms(cmp.predicted_mean_s), _pct(cmp.mean_error_pct),
                     _ms(cmp.measured_median_s), _ms(cmp.predicted_median_s), _pct(cmp.median_error_pct),
                     f"{cmp.band_fraction:.0%}"])
    out.append("step time (un-instrumented pass), ms")
    out.append(_table(["optimizer", "meas mean", "pred mean", "error", "meas median", "pred median", "error",
                       "in p5-p95"], rows))
    out += ["", "phases (instrumented pass: a sync after each phase), ms per step, measured / predicted"]
    names = [p for p in PHASES if any(p in cmp.measured_phases_s for cmp in res.comparisons.values())]
    rows = []
    for label, cmp in res.comparisons.items():
        row = [label]
        for p in names:
            m, pr = cmp.measured_phases_s.get(p), cmp.predicted_phases_s.get(p, 0.0)
            row.append("-" if m is None else f"{_ms(m)} / {_ms(pr)}")
        row.append(f"{_ms(cmp.measured_instrumented_s)} / {_ms(cmp.predicted_instrumented_s)}")
        rows.append(row)
    out.append(_table(["optimizer"] + [_PHASE_LABEL[p] for p in names] + ["step"], rows))
    worst = max(res.comparisons.values(), key=lambda x: abs(x.step_error_pct))
    if res.passed:
        out.append(f"\nresult: every mean-step error is within the ±{res.tolerance_pct:g}% tolerance "
                   f"(largest: {worst.label} {_pct(worst.step_error_pct)})")
    else:
        bad = [f"{x.label} {_pct(x.step_error_pct)}" for x in res.comparisons.values()
               if abs(x.step_error_pct) > res.tolerance_pct]
        out.append(f"\nresult: FAIL: mean-step error beyond ±{res.tolerance_pct:g}%: {', '.join(bad)}")
    for note in res.notes:
        out.append(f"note: {note}")
    if outputs:
        out.append("wrote " + ", ".join(outputs))
    return "\n".join(out)


def render_json(res: ValidationResult) -> str:
    return json.dumps(res.to_dict(), indent=1, allow_nan=True)


def figure(res: ValidationResult):
    """Left: mean step time per optimizer, measured vs predicted (whiskers: the measured steps'
    p5-p95 and the simulated band). Right: instrumented phases, stacked, measured vs predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(res.comparisons)
    cmps = [res.comparisons[k] for k in labels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    x = np.arange(len(labels))
    w = 0.38
    meas = [c.measured_mean_s * 1e3 for c in cmps]
    pred = [c.predicted_mean_s * 1e3 for c in cmps]
    m_err = np.array([[c.measured_mean_s * 1e3 - np.percentile(c.measured_s, 5) * 1e3,
                       np.percentile(c.measured_s, 95) * 1e3 - c.measured_mean_s * 1e3] for c in cmps]).T
    pooled = [np.asarray(c.predicted_replicas_s).ravel() for c in cmps]
    p_err = np.array([[c.predicted_mean_s * 1e3 - np.percentile(p, 5) * 1e3,
                       np.percentile(p, 95) * 1e3 - c.predicted_mean_s * 1e3] for c, p in zip(cmps, pooled)]).T
    ax1.bar(x - w / 2, meas, w, yerr=np.clip(m_err, 0, None), capsize=3, label="measured", color="#4c72b0")
    ax1.bar(x + w / 2, pred, w, yerr=np.clip(p_err, 0, None), capsize=3, label="predicted", color="#dd8452")
    for i, c in enumerate(cmps):
        ax1.annotate(_pct(c.mean_error_pct), (x[i] + w / 2, pred[i]), textcoords="offset points", xytext=(0, 12),
                     ha="center", fontsize=8)
    ax1.set_xticks(x, labels)
    ax1.set_ylabel("mean step time, ms (whiskers: p5-p95)")
    ax1.set_title(f"step time, {res.nodes} rank(s), {res.link}")
    ax1.legend(fontsize=8)
    ax1.grid(True, axis="y", alpha=0.3)

    names = [p for p in PHASES if any(p in c.measured_phases_s for c in cmps)]
    colors = dict(zip(PHASES, ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974")))
    for j, (kind, off) in enumerate((("measured", -w / 2), ("predicted", w / 2))):
        bottom = np.zeros(len(cmps))
        for p in names:
            vals = np.array([(c.measured_phases_s if kind == "measured" else c.predicted_phases_s).get(p, 0.0) * 1e3
                             for c in cmps])
            ax2.bar(x + off, vals, w, bottom=bottom, color=colors[p], edgecolor="white",
                    hatch="" if kind == "measured" else "//", label=_PHASE_LABEL[p] if j == 0 else None)
            bottom += vals
    ax2.set_xticks(x, [f"{lab}\nmeas | pred" for lab in labels])
    ax2.set_ylabel("ms per step (instrumented pass)")
    ax2.set_title("phases: measured (plain) vs predicted (hatched)")
    ax2.legend(fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write_outputs(res: ValidationResult, out_dir: str | Path) -> list[str]:
    """validate.json and validate.png in ``out_dir``; returns the paths written."""
    from asprof.traces.io import write_atomic

    d = Path(out_dir)
    paths = [str(write_atomic(d / "validate.json", render_json(res) + "\n"))]
    fig = figure(res)
    png = d / "validate.png"
    fig.savefig(png, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    paths.append(str(png))
    return paths
