"""The fidelity benchmark's records (issue 16 §3): every configuration's raw records in one
gzip JSON file, small enough to commit, from which the prediction is computed again with no
other file — and the one function that re-simulates a run (this path and resim_fidelity.py's).

``benchmarks/records/dev-<seed>/cell-NN.json.gz`` (the report split: ``benchmarks/records/fidelity-report/``)::

    {"schema": "asprof.fidelity-cell", "version": 1, "split": "dev" | "report" | "smoke-dev", "seed": S,
     "draw": {...the drawn configuration, fidelity_draw.Draw...},
     "sizing": {"batch", "steps", "predicted_step_s", "budget_s", ...how the step-time budget sized it},
     "config": {...asprof validate's ValidateConfig.to_dict()...},
     "model_config": {...ModelConfig fields...} | null,        # a random model (its JSON file is not kept)
     "trace": {...the cluster trace the prediction used, compacted (below)...},
     "runs": [{"label", "index", "step_time_s": [...], "phases_s": [{phase: s}, ...],
               "live": {...validate's own figures, from the uncompacted trace...}}, ...],
     "recorded": {"utc", "commit", "load", "other_cores", "wall_s", ...}}

The trace is the whole cluster trace of the run (with --probe-during, every run's rounds; run i
is predicted from its rounds 1000·i… and the ring, the speed pool from all of them), compacted:
every float to 4 significant digits, each measurement's samples cut to at most
``max_samples`` evenly spaced order statistics (fewer where the trace has many records, so a
6-rank trace fits), the harness's warnings and cold first call dropped. The benchmark's figures
are those re-simulated from the compacted records — exactly what ``--resim`` reproduces —; the
"live" figures of the uncompacted trace are kept next to them for comparison.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asprof.traces.schema import Trace  # noqa: E402

SCHEMA, VERSION = "asprof.fidelity-cell", 1
DIGITS = 4
# Every sample is kept: the simulator's sampled prediction follows the tails of the probe's
# samples, and keeping 16 or 32 order statistics of each measurement moved a prediction by 7-12 %
# (a 2-rank quick-level trace, 2026-12-08); 3 significant digits moved it by < 0.01 %.
SAMPLE_DIGITS = 3


def sig(x, digits: int = DIGITS):
    """``x`` to ``digits`` significant digits; whole numbers (counts, bytes, flops), ints, bools,
    strings and None as they are."""
    if isinstance(x, float) and math.isfinite(x) and x != int(x):
        return float(f"{x:.{digits - 1}e}")
    if isinstance(x, list):
        return [sig(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: sig(v, digits) for k, v in x.items()}
    return x


DROPPED = ("iqr_s", "min_s", "mean_s", "cv", "first_s", "warnings")  # not read by the simulator


def pack_trace(trace: Trace) -> dict:
    """The trace as a record keeps it (module doc): what the simulator reads — a measurement's
    ``median_s``, its metrics and every one of its samples — and nothing else (the rest of the
    timing summary is recomputed from the samples by :func:`unpack_trace`)."""
    d = trace.to_dict()
    for recs in d["probes"].values():
        for r in recs:
            r.pop("series", None)
            t = r.get("timing")
            if t:
                for k in DROPPED:
                    t.pop(k, None)
                t["samples_s"] = sig(t["samples_s"], SAMPLE_DIGITS)
    return sig(d)


def unpack_trace(d: dict) -> Trace:
    """A valid trace from :func:`pack_trace`'s dict (the timing summaries from the kept samples)."""
    d = json.loads(json.dumps(d))
    for recs in d["probes"].values():
        for r in recs:
            t = r.get("timing")
            if t and "mean_s" not in t:
                x = np.asarray(t["samples_s"], dtype=float)
                q1, q3 = np.percentile(x, [25, 75])
                mean = float(x.mean())
                t.update(iqr_s=float(q3 - q1), min_s=float(x.min()), mean_s=mean,
                         cv=float(x.std(ddof=1) / mean) if len(x) > 1 and mean > 0 else 0.0)
    return Trace.from_dict(d)


def compact_trace(trace: Trace) -> Trace:
    """The trace the record's prediction is computed from (pack, then unpack)."""
    return unpack_trace(pack_trace(trace))


def cell_record(split: str, seed: int, draw, sizing: dict, cfg, result, trace: Trace, model_config: dict | None,
                recorded: dict) -> dict:
    """The record of one configuration's `asprof validate` run (module doc)."""
    runs = []
    for i, spec in enumerate(cfg.specs()):
        label = spec.optimizer.label
        t, c = result.training[label], result.comparisons[label]
        runs.append({"label": label, "index": i, "step_time_s": sig(list(t["step_time_s"]), 6),
                     "phases_s": sig([dict(p) for p in (t.get("phases_s") or [])], 5),
                     "live": sig({"predicted_mean_s": c.predicted_mean_s, "measured_mean_s": c.measured_mean_s,
                                  "mean_error_pct": c.mean_error_pct, "band_fraction": c.band_fraction,
                                  "measured_phases_s": c.measured_phases_s, "predicted_phases_s": c.predicted_phases_s},
                                 5)})
    config = cfg.to_dict()
    return {"schema": SCHEMA, "version": VERSION, "split": split, "seed": seed, "draw": draw.to_dict(),
            "sizing": sizing, "config": config, "model_config": model_config,
            "hostfile": json.loads(Path(cfg.hostfile).read_text()) if cfg.hostfile else None,
            "trace": pack_trace(trace), "runs": runs, "recorded": recorded}


def failure_record(split: str, seed: int, draw, sizing: dict, cfg, model_config: dict | None, recorded: dict) -> dict:
    """The record of a configuration whose validation failed (``recorded["failed"]`` says why):
    kept, so a split's failures are counted, never hidden by a re-draw."""
    return {"schema": SCHEMA, "version": VERSION, "split": split, "seed": seed, "draw": draw.to_dict(),
            "sizing": sizing, "config": cfg.to_dict(), "model_config": model_config, "hostfile": None,
            "trace": None, "runs": [], "recorded": recorded}


def write_cell(directory: str | Path, record: dict) -> Path:
    """``directory/cell-NN.json.gz``, written atomically, byte-identical for the same record."""
    path = Path(directory) / f"cell-{record['draw']['index']:02d}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(json.dumps(record, separators=(",", ":"), sort_keys=True).encode(), 9, mtime=0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cell-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def read_cell(path: str | Path) -> dict:
    doc = json.loads(gzip.decompress(Path(path).read_bytes()))
    if doc.get("schema") != SCHEMA or doc.get("version") != VERSION:
        raise ValueError(f"{path}: not a {SCHEMA} v{VERSION} record")
    return doc


def cell_files(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("cell-*.json.gz"))


# -- re-simulation: one function for this path and resim_fidelity.py -------------------------------
def run_records(trace: Trace, i: int, pool: bool = False) -> Trace:
    """The records run ``i`` of a --probe-during validation was predicted from: its own rounds
    (run i's rounds are numbered 1000·i…, asprof.validate.run) and the ring; all with ``pool``."""
    keep = [r for r in trace.records
            if pool or r.probe == "allreduce" or 1000 * i <= r.params.get("round", -1) < 1000 * (i + 1)]
    return replace(trace, records=tuple(keep))


def resimulate(cfg, trace: Trace, spec, index: int, measured, measured_phases=None, pool: bool = False,
               spread_all: bool = True, gemm_shapes: bool | None = None):
    """Run ``index`` (``spec``) of validation ``cfg`` predicted again from ``trace`` exactly as
    `asprof validate` predicts it (asprof.validate.run.predict_run), compared with its measured
    steps: a Comparison. Variants: ``pool`` (every round of the run's cell), ``spread_all=False``
    (the speed pool from the run's own rounds), ``gemm_shapes`` (HardwareModel.from_trace)."""
    from asprof.validate.compare import compare
    from asprof.validate.run import predict_run

    own = run_records(trace, index, pool) if cfg.probe_during else trace
    whole = trace if cfg.probe_during and spread_all else None
    replicas, phases, breakdown, _ = predict_run(cfg, own, spec, gemm_shapes=gemm_shapes, spread_from=whole)
    return compare(spec.optimizer.label, list(measured), replicas, cfg.skip, measured_phases or None,
                   phases if measured_phases else None, breakdown)


def passes_disagree_pct(c) -> float:
    """How far a run's two measurements of the same steps disagree: the measured ratio of the
    plain to the instrumented pass over the predicted one, minus 1 (percent; nan without phases)."""
    if not (c.measured_instrumented_s > 0 and c.predicted_instrumented_s > 0):
        return math.nan
    return 100.0 * ((c.measured_mean_s / c.measured_instrumented_s) / (c.predicted_mean_s / c.predicted_instrumented_s) - 1.0)


def record_config(record: dict, workdir: str | Path):
    """The record's ValidateConfig, runnable anywhere: a random model's JSON and a hostfile are
    written to ``workdir``; the namespace rate is dropped (the prediction does not use it, and
    building a ring needs root)."""
    from asprof.validate.config import ValidateConfig

    d = json.loads(json.dumps(record["config"]))
    d["netns_rate"], d["trace"] = None, None
    if record.get("model_config"):
        path = Path(workdir) / f"{record['model_config']['name']}.json"
        path.write_text(json.dumps(record["model_config"]))
        d["run"]["model"] = str(path)
    if record.get("hostfile") is not None:
        path = Path(workdir) / "hostfile.json"
        path.write_text(json.dumps(record["hostfile"]))
        d["hostfile"] = str(path)
    return ValidateConfig.from_dict(d)


def resim_record(record: dict, seed: int = 0, **variant) -> list[dict]:
    """Every run of one record re-simulated from the record alone: one dict per cell with the
    figures of fidelity_stats.cell_figures, its group, label, means and worst phase."""
    from fidelity_stats import cell_figures

    if not record["runs"]:  # a failed configuration (failure_record)
        return []
    trace = unpack_trace(record["trace"])
    out = []
    with tempfile.TemporaryDirectory() as work:
        cfg = record_config(record, work)
        specs = cfg.specs()
        for run in record["runs"]:
            spec = specs[run["index"]]
            c = resimulate(cfg, trace, spec, run["index"], run["step_time_s"], run["phases_s"], **variant)
            m = np.asarray(c.measured_s)
            inside = (m >= np.asarray(c.band_lo_s)) & (m <= np.asarray(c.band_hi_s))
            fig = cell_figures(m, c.predicted_mean_s, inside, passes_disagree_pct(c), seed=seed)
            big = {k: v for k, v in c.phase_error_pct.items()
                   if v == v and c.measured_phases_s.get(k, 0.0) >= 0.05 * c.measured_instrumented_s}
            worst = max(big.items(), key=lambda kv: abs(kv[1]), default=("-", math.nan))
            out.append({**fig, "group": f"{record['split']}-{record['seed']}#{record['draw']['index']}",
                        "label": c.label, "nodes": cfg.world_size, "link": record["draw"]["rate_mbit"],
                        "measured_mean_s": c.measured_mean_s, "predicted_mean_s": c.predicted_mean_s,
                        "worst_phase": worst[0], "worst_phase_error_pct": worst[1],
                        "live_mean_error_pct": run["live"]["mean_error_pct"]})
    return out


def resim_directory(directory: str | Path, seed: int = 0, **variant) -> tuple[list[dict], dict]:
    """(every cell's figures, the summary with its intervals) from the records in ``directory``."""
    from fidelity_stats import summarise

    files = cell_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory}: no cell-*.json.gz records")
    records = [read_cell(f) for f in files]
    cells = [c for r in records for c in resim_record(r, seed=seed, **variant)]
    if not cells:
        raise ValueError(f"{directory}: every configuration failed")
    failed = [r["recorded"].get("failed") for r in records if not r["runs"]]
    return cells, {**summarise(cells, seed=seed), "failed_configurations": len(failed), "failures": failed}
