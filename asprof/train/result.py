"""The result of a training run: what every rank measured, combined, plus a summary.

JSON-able (``to_dict`` / ``from_dict``); ``asprof validate`` reads per-step times, phase times,
bytes per step and the configuration from it. Units are in the field names.
"""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asprof.optimizers.accounting import closed_form_state_bytes
from asprof.train.config import TrainConfig

SCHEMA = "asprof.train_result"
VERSION = 1


@dataclass
class TrainResult:
    config: dict
    model: dict                       # ModelConfig of the run (vocab 256) + n_params
    corpus: dict
    host: dict
    world_size: int
    losses: list[float]               # per step, mean over ranks
    step_time_s: list[float]          # per step, slowest rank (un-instrumented pass)
    refresh_steps: list[int]
    bytes_per_step: list[dict]        # all-reduce payload per rank per step, by tag
    val_losses: list[list]            # [step, loss], mean over ranks
    state_bytes: int
    closed_form_state_bytes: int
    basis_digests: list               # per rank (None for Adam); equal = identical bases
    summary: dict
    phases_s: list[dict] | None = None              # instrumented pass, rank 0, seconds per phase
    phases_s_by_rank: list[list[dict]] | None = None  # every rank's (distributed runs)
    instrumented_step_time_s: list[float] | None = None
    instrumented_loss_max_abs_diff: float | None = None  # instrumented vs timed pass (determinism)
    # probe records measured between the steps (validate --probe-during, asprof.validate.probing_worker):
    # records of every rank, skips, rank 0's host, seconds of training and of probing
    probed: dict | None = None
    schema: str = field(default=SCHEMA)
    version: int = field(default=VERSION)

    @property
    def final_val_loss(self) -> float:
        return self.val_losses[-1][1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainResult":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a training result (schema {d.get('schema')!r})")
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(p)
        return p


def summarize(step_time_s: list[float], skip: int, tokens_per_step: int, phases_s=None) -> dict:
    """Step-time statistics over the steps after ``skip`` (compilation, KPOP's every-step warm-up
    refreshes), tokens/s from the mean, and mean seconds per phase over the same steps."""
    steady = step_time_s[skip:] or step_time_s
    s = sorted(steady)
    mean = statistics.fmean(steady)
    out = {
        "steps_timed": len(steady),
        "skipped_steps": len(step_time_s) - len(steady),
        "step_time_mean_s": mean,
        "step_time_median_s": statistics.median(steady),
        "step_time_p95_s": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
        "step_time_min_s": s[0],
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step / mean if mean > 0 else float("nan"),
    }
    if phases_s:
        steady_ph = phases_s[skip:] or phases_s
        names = sorted({k for p in steady_ph for k in p})
        # Mean over all steady steps (a phase absent from a step, e.g. refresh, counts as 0): the
        # amortised cost per step.
        out["phase_mean_s"] = {k: statistics.fmean(p.get(k, 0.0) for p in steady_ph) for k in names}
    return out


def combine(config: TrainConfig, records: list[dict], corpus: dict, n_params: int) -> TrainResult:
    """One result from the per-rank records (dicts of asprof.train.loop.ProcessRecord)."""
    records = sorted(records, key=lambda r: r["rank"])
    k = len(records)
    steps = len(records[0]["losses"])

    def mean_over(key):
        return [sum(r[key][i] for r in records) / k for i in range(steps)]

    def max_over(key):
        return [max(r[key][i] for r in records) for i in range(steps)]

    val = [[records[0]["val_losses"][j][0], sum(r["val_losses"][j][1] for r in records) / k]
           for j in range(len(records[0]["val_losses"]))]
    phases = by_rank = inst = diff = None
    if records[0].get("phases_s"):
        # Rank 0's phases (a per-phase max over ranks would add up to more than any rank's step);
        # every rank's are kept too: waiting for a slower rank shows up in its grad_allreduce.
        phases = records[0]["phases_s"]
        by_rank = [r["phases_s"] for r in records] if k > 1 else None
        inst = max_over("instrumented_step_time_s")
        diff = max(abs(a - b) for r in records for a, b in zip(r["losses"], r["instrumented_losses"]))
    mc = config.model_config()
    tokens_per_step = config.batch * k * mc.seq_len  # over the ranks
    step_times = max_over("step_time_s")
    summary = summarize(step_times, config.summary_skip(), tokens_per_step)
    if phases:
        summary["instrumented"] = summarize(inst, config.summary_skip(), tokens_per_step, phases)
    summary["final_val_loss"] = val[-1][1]
    summary["final_train_loss"] = mean_over("losses")[-1]
    import mlx.core as mx

    return TrainResult(
        config=config.to_dict(),
        model={**mc.to_dict(), "n_params": n_params},
        corpus=corpus,
        host={"hostname": platform.node(), "machine": platform.machine(), "system": platform.system(),
              "python": platform.python_version(), "mlx": mx.__version__,
              "metal": bool(mx.metal.is_available()),
              # the BLAS MLX called on each rank ("reference" = the Linux wheel's slow netlib one)
              "blas": sorted({r.get("blas") or "unknown" for r in records})},
        world_size=k,
        losses=mean_over("losses"),
        step_time_s=step_times,
        refresh_steps=records[0]["refresh_steps"],
        bytes_per_step=records[0]["bytes_per_step"],
        val_losses=val,
        state_bytes=records[0]["state_bytes"],
        closed_form_state_bytes=closed_form_state_bytes(mc, config.optimizer, config.sparsity, config.spec.optimizer.alice_rank),
        basis_digests=[r["basis_digest"] for r in records],
        summary=summary,
        phases_s=phases,
        phases_s_by_rank=by_rank,
        instrumented_step_time_s=inst,
        instrumented_loss_max_abs_diff=diff,
    )
