"""Predicted vs measured: the comparison math of `asprof validate` (pure; no I/O).

Over the compared steps t ∈ [W, N) (W = warm-up steps, excluded on both sides; the simulator ran
the same step indices, so refresh steps line up):

* measured: the un-instrumented step times (slowest rank per step, asprof.train.result);
* predicted: R simulated replicas (seeds 0..R−1, task times sampled from the trace's spread);
  ``predicted mean`` is the mean over replicas and steps, ``predicted median`` the median of the
  pooled step times;
* error = (predicted − measured) / measured, in percent, for the mean and the median step;
* band: the fraction of measured steps t with p5(t) ≤ measured(t) ≤ p95(t), where p5(t), p95(t)
  are percentiles of step t over the replicas (the simulator's own claim of its spread);
* phases: the instrumented pass's mean seconds per step of each phase (a phase absent from a step,
  e.g. the refresh, counts as 0) against the instrumented simulation's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PHASES = ("fwd_bwd", "factor_ema", "refresh", "grad_allreduce", "optimizer")


def rel_error_pct(predicted: float, measured: float) -> float:
    """(predicted − measured) / measured × 100 (nan when nothing was measured)."""
    return (predicted - measured) / measured * 100.0 if measured > 0 else float("nan")


def band_fraction(measured, replicas, lo_pct: float = 5.0, hi_pct: float = 95.0) -> tuple[float, list, list]:
    """Fraction of measured[t] inside [p_lo(t), p_hi(t)] of replicas[:, t]; also the bounds."""
    m = np.asarray(measured, dtype=float)
    r = np.asarray(replicas, dtype=float)
    if r.ndim != 2 or r.shape[1] != m.size:
        raise ValueError("replicas must be (R, steps) with the measured steps' length")
    lo = np.percentile(r, lo_pct, axis=0)
    hi = np.percentile(r, hi_pct, axis=0)
    inside = (m >= lo) & (m <= hi)
    return float(inside.mean()) if m.size else float("nan"), lo.tolist(), hi.tolist()


def phase_means(phases: list[dict], names=PHASES) -> dict:
    """Mean seconds per step of each phase over ``phases`` (absent = 0)."""
    if not phases:
        return {}
    return {n: float(np.mean([p.get(n, 0.0) for p in phases])) for n in names
            if any(n in p for p in phases)}


@dataclass(frozen=True)
class Comparison:
    """One optimizer's predicted vs measured figures (seconds; errors in percent)."""

    label: str
    steps: tuple[int, int]  # compared step indices [first, end)
    measured_s: tuple[float, ...]
    predicted_replicas_s: tuple[tuple[float, ...], ...]
    measured_mean_s: float
    measured_median_s: float
    predicted_mean_s: float
    predicted_median_s: float
    mean_error_pct: float
    median_error_pct: float
    band_fraction: float
    band_lo_s: tuple[float, ...]
    band_hi_s: tuple[float, ...]
    measured_phases_s: dict = field(default_factory=dict)
    predicted_phases_s: dict = field(default_factory=dict)
    phase_error_pct: dict = field(default_factory=dict)
    measured_instrumented_s: float = float("nan")
    predicted_instrumented_s: float = float("nan")
    predicted_breakdown_s: dict = field(default_factory=dict)

    @property
    def step_error_pct(self) -> float:
        """The error --tolerance applies to: the mean step's (throughput; includes refreshes)."""
        return self.mean_error_pct

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["predicted_replicas_s"] = [list(r) for r in self.predicted_replicas_s]
        for k in ("measured_s", "band_lo_s", "band_hi_s", "steps"):
            d[k] = list(d[k])
        return d


def compare(label: str, measured_steps: list[float], predicted_replicas: list[list[float]], first: int,
            measured_phases: list[dict] | None = None, predicted_phases: list[dict] | None = None,
            predicted_breakdown: dict | None = None) -> Comparison:
    """Compare steps [first, N) of one optimizer's run with its simulations (see module doc)."""
    n = len(measured_steps)
    if not 0 <= first < n:
        raise ValueError(f"no steps to compare (first {first}, {n} measured)")
    reps = np.asarray(predicted_replicas, dtype=float)
    if reps.ndim != 2 or reps.shape[1] != n:
        raise ValueError("each replica must have one time per measured step")
    meas = np.asarray(measured_steps[first:], dtype=float)
    pred = reps[:, first:]
    frac, lo, hi = band_fraction(meas, pred)
    mm, md = float(meas.mean()), float(np.median(meas))
    pm, pd = float(pred.mean()), float(np.median(pred))
    mph = phase_means((measured_phases or [])[first:])
    pph = phase_means((predicted_phases or [])[first:])
    perr = {k: rel_error_pct(pph.get(k, 0.0), v) for k, v in mph.items()}
    inst_m = float(sum(mph.values())) if mph else float("nan")
    inst_p = float(sum(pph.values())) if pph else float("nan")
    return Comparison(
        label=label, steps=(first, n), measured_s=tuple(meas.tolist()),
        predicted_replicas_s=tuple(tuple(r) for r in pred.tolist()),
        measured_mean_s=mm, measured_median_s=md, predicted_mean_s=pm, predicted_median_s=pd,
        mean_error_pct=rel_error_pct(pm, mm), median_error_pct=rel_error_pct(pd, md),
        band_fraction=frac, band_lo_s=tuple(lo), band_hi_s=tuple(hi),
        measured_phases_s=mph, predicted_phases_s=pph, phase_error_pct=perr,
        measured_instrumented_s=inst_m, predicted_instrumented_s=inst_p,
        predicted_breakdown_s=dict(predicted_breakdown or {}),
    )
