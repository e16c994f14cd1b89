"""Compute probes measured *between training steps*, in the training process itself.

A shared machine's speed for the same work drifts — on this project's 2-vCPU VM by ±10-20 %
between windows of a few seconds to tens of minutes (docs/validate.md §6) — so a probe taken
before a run, even a minute before, describes a slightly different machine than the run saw.
:class:`ProbeDuringTraining` interleaves the cluster's compute probes with the training steps
(``asprof validate --probe-during``): after every step it measures probe records until the
probe has had its share of the time so far, so probe and training sample the same minutes of
the machine. Ranks stay in lockstep: rank 0 decides whether to measure another record and the
decision is shared (a one-float ``all_sum``), and every measurement's own stop rule is collective
(:func:`asprof.probe.cluster_worker.lockstep_records`). At the end the round in progress is
completed, so the records cover every measurement at least once.
"""

from __future__ import annotations

import time

from asprof.probe.cluster_worker import COMPUTE_PROBES, lockstep_records


class ProbeDuringTraining:
    def __init__(self, group, level: str = "quick", share: float = 0.5, names=COMPUTE_PROBES):
        if not 0.0 < share < 1.0:
            raise ValueError(f"share must be in (0, 1), got {share!r}")
        self.group, self.ratio = group, share / (1.0 - share)
        self.records: list[dict] = []
        self.skipped: list[dict] = []
        self.rounds_done = 0
        self.train_s = self.probe_s = 0.0
        self._gen = lockstep_records(group, level, names, rounds=None, skipped=self.skipped)
        self._last = time.perf_counter()

    def _agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        if self.group.size() == 1:
            return flag
        import mlx.core as mx

        mine = float(flag) if self.group.rank() == 0 else 0.0
        return mx.distributed.all_sum(mx.array([mine]), group=self.group).item() > 0

    def _pull(self) -> None:
        t = time.perf_counter()
        _, rec = next(self._gen)
        if rec is None:
            self.rounds_done += 1
        else:
            self.records.append(rec)
        self.probe_s += time.perf_counter() - t

    def between(self, step: int | None = None) -> None:
        """After a training step: measure until the probe has had its share of the time."""
        self.train_s += time.perf_counter() - self._last
        while self._agree(self.probe_s < self.ratio * self.train_s):
            self._pull()
        self._last = time.perf_counter()

    def finish(self) -> None:
        """Complete the round in progress (at least one whole round)."""
        done = self.rounds_done
        while self._agree(self.rounds_done == done):
            self._pull()
