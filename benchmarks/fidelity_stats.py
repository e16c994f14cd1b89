"""Confidence intervals for the fidelity benchmark's figures (issue 16 §6). Pure: arrays in,
numbers out; the bootstrap's resampling is seeded, so the same records give the same intervals.

Per cell (one optimizer's run): the error of the mean step, (predicted − measured) / measured,
and the fraction of measured steps inside the simulated p5–p95 band, each with a bootstrap
interval over the compared steps (``scipy.stats.bootstrap``, percentile method). A run's steps
are not independent — the machine has slow and fast spells seconds long (docs/validate.md §6.2:
lag-1 autocorrelation 0.2–0.6) — so the bootstrap resamples *blocks* of consecutive steps (their
means), block length ⌈n^(1/3)⌉ (at most n/2), the usual rule for a moving-block bootstrap; resampling single
steps would make the interval too narrow. The predicted mean is over 20 replicas × the steps and
is taken as exact.

A cell is **noise-limited** when its own two measurements of the same steps disagree by more
than half its interval's width: the plain and the instrumented pass (their measured ratio over
the predicted one, bench_fidelity.rerun_pct), or, without an instrumented pass, the two halves
of the run. Its error then says more about the machine than about the simulator.

Summary over cells: the median |error| with a bootstrap interval over cells; the pooled band
fraction (all cells' inside steps over all their compared steps) with a paired bootstrap over
cells; for the max |error| and the smallest cell band fraction, whose bootstrap would be
meaningless (a resample's max never exceeds the sample's), the interval where they lie given
each cell's own interval: [max over cells of the lower bound of |error|, max of the upper].
"""

from __future__ import annotations

import math
import warnings

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def _boot(data: tuple, statistic, paired: bool = False, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` (nan, nan with fewer than 2 samples)."""
    from scipy.stats import bootstrap

    if len(data[0]) < 2:
        return (math.nan, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical samples: a zero-width interval, not an error
        res = bootstrap(data, statistic, paired=paired, vectorized=True, confidence_level=CONFIDENCE,
                        n_resamples=RESAMPLES, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return (float(lo), float(hi))


def block_length(n: int) -> int:
    """⌈n^(1/3)⌉, but short enough to leave two blocks (a bootstrap needs two samples)."""
    return max(1, min(math.ceil(n ** (1 / 3)), n // 2))


def block_means(x) -> np.ndarray:
    """Means of consecutive blocks of ``x`` (block_length; block sizes differ by at most one)."""
    x = np.asarray(x, dtype=float)
    k = max(1, len(x) // block_length(len(x)))
    return np.array([b.mean() for b in np.array_split(x, k)])


def error_pct(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured


def cell_figures(measured, predicted_mean_s: float, inside, passes_disagree_pct: float = math.nan,
                 seed: int = 0) -> dict:
    """One cell's figures with their intervals (see module doc). ``measured``: the compared steps'
    times; ``inside``: for each, whether it fell in the simulated p5–p95 band."""
    m = np.asarray(measured, dtype=float)
    ins = np.asarray(inside, dtype=float)
    err = error_pct(predicted_mean_s, float(m.mean()))
    lo, hi = _boot((block_means(m),), lambda b, axis: error_pct(predicted_mean_s, np.mean(b, axis=axis)), seed=seed)
    lo, hi = min(lo, hi), max(lo, hi)  # the error falls as the measured mean rises
    band_lo, band_hi = _boot((block_means(ins),), lambda b, axis: np.mean(b, axis=axis), seed=seed)
    half = len(m) // 2
    halves = 100.0 * (m[half:].mean() / m[:half].mean() - 1.0) if half else math.nan
    width = (hi - lo) / 2
    own = passes_disagree_pct if math.isfinite(passes_disagree_pct) else halves
    return {"mean_error_pct": err, "mean_error_ci": [lo, hi], "band_fraction": float(ins.mean()),
            "band_ci": [band_lo, band_hi], "inside": int(ins.sum()), "compared": len(m),
            "passes_disagree_pct": passes_disagree_pct, "halves_disagree_pct": halves,
            "noise_limited": bool(math.isfinite(own) and math.isfinite(width) and abs(own) > width)}


def abs_bounds(ci) -> tuple[float, float]:
    """Bounds of |x| for x in [lo, hi]."""
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (math.nan, math.nan)
    return (0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))


def ranking_correct(runs: list[tuple[str, float, float]]) -> bool:
    """Whether the predicted means order the optimizers of one configuration as the measured do
    (``runs``: (label, measured mean, predicted mean))."""
    by_measured = [r[0] for r in sorted(runs, key=lambda r: r[1])]
    by_predicted = [r[0] for r in sorted(runs, key=lambda r: r[2])]
    return by_measured == by_predicted


def summarise(cells: list[dict], seed: int = 0) -> dict:
    """The summary over ``cells`` (dicts of cell_figures plus "group", "label", "measured_mean_s",
    "predicted_mean_s"): the figures issue 16 names, each with its interval (module doc)."""
    if not cells:
        raise ValueError("no cells to summarise")
    errs = np.array([abs(c["mean_error_pct"]) for c in cells])
    inside = np.array([c["inside"] for c in cells], dtype=float)
    compared = np.array([c["compared"] for c in cells], dtype=float)
    abs_cis = [abs_bounds(c["mean_error_ci"]) for c in cells]
    bands = [c["band_fraction"] for c in cells]
    groups: dict = {}
    for c in cells:
        groups.setdefault(c["group"], []).append((c["label"], c["measured_mean_s"], c["predicted_mean_s"]))
    ranked = {g: ranking_correct(r) for g, r in groups.items() if len(r) > 1}
    i_min = int(np.argmin(bands))
    return {
        "cells": len(cells),
        "median_abs_error_pct": float(np.median(errs)),
        "median_abs_error_ci": list(_boot((errs,), lambda e, axis: np.median(e, axis=axis), seed=seed)),
        "max_abs_error_pct": float(errs.max()),
        "max_abs_error_ci": [max(b[0] for b in abs_cis), max(b[1] for b in abs_cis)],
        "band_fraction": float(inside.sum() / compared.sum()),
        "band_ci": list(_boot((inside, compared), lambda i, n, axis: np.sum(i, axis=axis) / np.sum(n, axis=axis),
                              paired=True, seed=seed)),
        "min_cell_band_fraction": float(bands[i_min]),
        "min_cell_band_ci": [min(c["band_ci"][0] for c in cells), min(c["band_ci"][1] for c in cells)],
        "mean_signed_error_pct": float(np.mean([c["mean_error_pct"] for c in cells])),
        "noise_limited_cells": sum(c["noise_limited"] for c in cells),
        "groups": len(groups),
        "ranking_groups": len(ranked),
        "ranking_correct_groups": sum(ranked.values()),
        "confidence": CONFIDENCE,
    }
