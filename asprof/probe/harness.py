"""The one timing harness every probe uses (DESIGN §3; STYLE: "one timing harness").

A measurement is:

1. one *cold* call (the first call of a fresh op pays for kernel compilation, allocation and
   page faults); its time is kept as ``first_s`` but never mixed into the samples;
2. warm-up calls, untimed, cut short once they have used a quarter of the budget (an op that
   takes seconds is warm after its first call);
3. timed samples, each one call followed by the framework's sync *inside* the timed region
   (``mx.eval`` / ``torch.*.synchronize``: MLX is lazy and GPUs are asynchronous, so a region
   without a sync times the dispatch, not the work). Samples continue until the coefficient of
   variation is at most ``target_cv`` (after ``min_repeats``), the time budget is spent, or
   ``max_repeats`` is reached (past ``max_time_s`` two samples are enough): the adaptive
   idea of ``torch.utils.benchmark``'s autorange.

Each result keeps the raw samples next to median / IQR / min / mean / CV and warnings in the
hyperfine style (say what happened and what to do). The clock is injectable so tests can drive
the harness with a fake clock; probes never call a clock themselves.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from asprof.traces.schema import Timing

Clock = Callable[[], float]


@dataclass(frozen=True)
class HarnessConfig:
    """How hard to try for one measurement. Defaults suit a full run; see :data:`LEVELS`."""

    warmup: int = 2  # untimed calls after the cold one
    min_repeats: int = 5
    max_repeats: int = 1000
    budget_s: float = 1.0  # time for warm-up + samples of one measurement (soft: min_repeats wins)
    max_time_s: float = 5.0  # hard cap: past it, stop as soon as there are 2 samples
    target_cv: float = 0.02  # stop early once the samples are this steady
    warn_cv: float = 0.10  # warn above this CV
    warn_cold_ratio: float = 5.0  # warn when the first call took this many medians

    def __post_init__(self):
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError(f"bad repeat counts in {self}")
        if self.budget_s <= 0 or self.max_time_s < self.budget_s or self.target_cv < 0:
            raise ValueError(f"bad budget or target in {self}")


def summarize(samples: Sequence[float], first_s: float | None = None,
              config: HarnessConfig = HarnessConfig(), what: str = "") -> Timing:
    """Raw samples -> :class:`Timing` (median, IQR, min, mean, CV) plus warnings."""
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("summarize needs at least one sample")
    med = statistics.median(xs)
    mean = statistics.fmean(xs)
    cv = _cv(xs)
    warnings = []
    label = f"{what}: " if what else ""
    if cv > config.warn_cv:
        warnings.append(
            f"{label}high variance: CV {cv:.0%} over {len(xs)} samples (> {config.warn_cv:.0%}); "
            "other programs may be competing for the machine: close them or re-run"
        )
    if first_s is not None and med > 0 and first_s > config.warn_cold_ratio * med:
        warnings.append(
            f"{label}cold start: the first call took {first_s / med:.0f}x the median "
            "(kept as first_s, excluded from the samples)"
        )
    return Timing(
        samples_s=tuple(xs), median_s=med, iqr_s=_iqr(xs), min_s=min(xs), mean_s=mean, cv=cv,
        first_s=first_s, warnings=tuple(warnings),
    )


def _cv(xs: Sequence[float]) -> float:
    """Coefficient of variation, sample standard deviation over mean (0 for one sample)."""
    if len(xs) < 2:
        return 0.0
    mean = statistics.fmean(xs)
    return statistics.stdev(xs) / mean if mean > 0 else 0.0


def _iqr(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[2] - q[0]


class Harness:
    """Times callables. ``fn()`` does the work and returns what ``sync`` must force/await."""

    def __init__(self, config: HarnessConfig = HarnessConfig(), clock: Clock = time.perf_counter):
        self.config = config
        self.clock = clock

    def _call(self, fn: Callable[[], Any], sync: Callable[[Any], None]) -> float:
        t0 = self.clock()
        sync(fn())
        return self.clock() - t0

    def first_call(self, fn: Callable[[], Any], sync: Callable[[Any], None]) -> float:
        """Time one call (with sync): used for cold launches in a fresh process."""
        return self._call(fn, sync)

    def measure(self, fn: Callable[[], Any], sync: Callable[[Any], None], what: str = "",
                agree: Callable[[bool], bool] | None = None,
                every: Callable[[float], int] | None = None) -> Timing:
        """Cold call, warm-up, then adaptive timed samples (see module docstring).

        ``agree(stop) -> stop`` makes the stopping decision collective: in a distributed
        measurement every rank must run the same number of calls or the collective hangs, so
        ranks combine their local decision (e.g. stop only when all want to stop).
        ``every(seconds of the last warm call) -> m``: with ``agree``, decide only after every
        m-th sample (m must be the same on every rank), so that samples run back to back
        between two agreements as a training step's work does.
        """
        c = self.config
        start = self.clock()
        first = last = self._call(fn, sync)
        for _ in range(c.warmup):
            if agree is None and self.clock() - start >= c.budget_s / 4:
                break
            last = self._call(fn, sync)
        m = max(1, int(every(last))) if agree is not None and every is not None else 1
        samples: list[float] = []
        while True:
            samples.append(self._call(fn, sync))
            n = len(samples)
            if n % m and n < c.max_repeats:
                continue
            spent = self.clock() - start
            stop = (
                n >= c.max_repeats
                or (n >= c.min_repeats and (_cv(samples) <= c.target_cv or spent >= c.budget_s))
                # A call that takes seconds: two samples give a median and a spread; more
                # would make a full run on a slow BLAS take hours.
                or (n >= 2 and spent >= c.max_time_s)
            )
            if agree is not None:
                stop = agree(stop)
            if stop:
                break
        return summarize(samples, first_s=first, config=c, what=what)

    def time_steps(self, step: Callable[[int], Any], steps: int, sync: Callable[[Any], None],
                   after: Callable[[int], None] | None = None) -> list[float]:
        """Time ``steps`` consecutive calls ``step(i)`` (each synced); ``after(i)`` runs outside
        the timed region (to read RSS and page faults between steps)."""
        out = []
        for i in range(steps):
            t0 = self.clock()
            sync(step(i))
            out.append(self.clock() - t0)
            if after is not None:
                after(i)
        return out


# Per-level harness settings. `quick` must keep the whole suite to about a minute on a 2-core
# machine; `tiny` is for tests (correctness of the plumbing, not of the numbers).
LEVELS = {
    "full": HarnessConfig(warmup=2, min_repeats=5, max_repeats=1000, budget_s=1.0, max_time_s=5.0),
    "quick": HarnessConfig(warmup=1, min_repeats=3, max_repeats=200, budget_s=0.15, max_time_s=0.6),
    "tiny": HarnessConfig(warmup=0, min_repeats=2, max_repeats=3, budget_s=0.01, max_time_s=0.05),
}


def per_second(amount: float, seconds: float) -> float:
    """amount / seconds; a zero-length sample (coarse clock) is clamped to 1 ns."""
    return amount / max(seconds, 1e-9)
