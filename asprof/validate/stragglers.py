"""Stragglers: a rank whose own work runs much slower than the other ranks' (a slow or busy node).

In a data-parallel step every rank waits for the slowest in the gradient all-reduce, so a
straggler does not show as a slow rank: every rank's step is slow, the others' all-reduce
phase is long, and the comparison with the prediction reads as a mis-predicted all-reduce. The
instrumented pass times each rank's phases (asprof.train.result ``phases_s_by_rank``); a rank's
*own work* is its step minus the all-reduce (median over the compared steps), and a rank whose
own work takes more than ``RATIO`` × the median of the other ranks' is named in validate's report.
"""

from __future__ import annotations

import statistics

RATIO = 1.5  # "much slower": the ranks of a healthy run differ by a few percent (tens on a shared VM)
WAIT_PHASE = "grad_allreduce"  # where the other ranks wait for the straggler


def own_work_s(steps: list[dict]) -> float:
    """Median seconds per step of every phase but the all-reduce (the median: a rank descheduled
    for a few steps by something else on its machine is not a straggler)."""
    if not steps:
        return 0.0
    return statistics.median(sum(v for k, v in s.items() if k != WAIT_PHASE) for s in steps)


def find_stragglers(phases_by_rank: list[list[dict]] | None, first: int = 0) -> list[dict]:
    """``[{"rank", "own_work_s", "others_s", "ratio"}]`` for each straggling rank (steps ``first``..)."""
    if not phases_by_rank or len(phases_by_rank) < 2:
        return []
    work = [own_work_s(steps[first:] or steps) for steps in phases_by_rank]
    out = []
    for r, w in enumerate(work):
        others = statistics.median(work[:r] + work[r + 1:])
        if others > 0 and w > RATIO * others:
            out.append({"rank": r, "own_work_s": w, "others_s": others, "ratio": w / others})
    return out


def describe(label: str, s: dict) -> str:
    return (f"{label}: rank {s['rank']} is a straggler: its own work (every phase but the all-reduce) takes "
            f"{s['ratio']:.1f}× the other ranks' ({s['own_work_s'] * 1e3:.1f} vs {s['others_s'] * 1e3:.1f} ms per "
            f"step); the others wait for it in the all-reduce, so the measured steps are its pace (a slow or busy node)")
