"""A randomized fidelity split (issue 16): configurations drawn with a seed
(fidelity_draw.draw_split), each sized to a step-time budget from its cluster's probe trace,
trained and predicted by `asprof validate`, recorded (fidelity_records) and re-simulated from
its record, which gives the figures printed (with their intervals, fidelity_stats).

Per configuration: (1) its cluster's trace — the newest matching one in --traces-dir, else the
cluster is probed now (validate's own probe; with --probe-during a tiny-level probe kept apart,
used only for sizing); (2) the size (:func:`size_cell`): the slowest optimizer's step predicted
from that trace; the batch per node lowered until warm-up + 1 + --min-compared steps fit the
budget, then as many steps as fill it; (3) `asprof validate` on that configuration; (4) the
record written to --records (``cell-NN.json.gz``) and re-simulated from it alone.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asprof.spec import RunChoices, timed_from  # noqa: E402
from fidelity_draw import Draw, draw_split  # noqa: E402


def size_cell(draw: Draw, predict_step, budget_s: float, min_compared: int = 8, max_steps: int = 400) -> dict:
    """Batch per node and steps so that one pass lasts about ``budget_s``: ``predict_step(batch)``
    is the slowest optimizer's predicted mean step (seconds) at that batch. The batch is lowered
    (at most three predictions) until warm-up + 1 + ``min_compared`` steps fit the budget — or
    it is 1 —, then the steps fill the budget (at least that many, at most ``max_steps``)."""
    min_steps = timed_from(draw.warmup) + min_compared
    batch = draw.batch
    step = predict_step(batch)
    for _ in range(3):
        if min_steps * step <= budget_s or batch == 1:
            break
        batch = max(1, min(batch - 1, int(batch * budget_s / (min_steps * step))))
        step = predict_step(batch)
    steps = max(min_steps, min(max_steps, int(budget_s / step)))
    return {"drawn_batch": draw.batch, "batch": batch, "steps": steps, "predicted_step_s": step,
            "predicted_pass_s": steps * step, "budget_s": budget_s, "min_compared": min_compared}


def default_records(split: str, seed: int) -> str:
    """Where a split's records go: the one report split in benchmarks/records/fidelity-report/
    (issue 16's acceptance command reads it there), a development split under dev-<seed>/."""
    records = Path(__file__).resolve().parent / "records"
    return str(records / ("fidelity-report" if split == "report" else f"{split}-{seed}"))


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def validate_config(draw: Draw, args, model_dir: Path):
    """The ValidateConfig of ``draw`` (batch and steps before sizing); (config, model config)."""
    from asprof.validate.config import ValidateConfig

    model, mc = draw.model, draw.model_config
    if mc is not None:
        model_dir.mkdir(parents=True, exist_ok=True)
        path = model_dir / f"{mc['name']}.json"
        path.write_text(json.dumps(mc))
        model = str(path)
    run = RunChoices(model=model, batch=draw.batch, seq=draw.seq, optimizers=draw.optimizers,
                     sparsity=(draw.sparsity,), frequency=draw.frequency, warmup=draw.warmup)
    cfg = ValidateConfig(nodes=draw.nodes, netns_rate=draw.rate_mbit, run=run,
                         steps=timed_from(draw.warmup) + args.min_compared, traces_dir=args.traces_dir,
                         out=str(Path(args.out) / f"cell-{draw.index:02d}"), probe_during=args.probe_during,
                         probe_level=args.probe_level, probe_rounds=args.probe_rounds)
    return cfg, mc


def sizing_trace(cfg, progress):
    """The trace that sizes ``cfg`` (module doc (1))."""
    from asprof.validate.run import choose_trace, placement

    if cfg.probe_during:
        cfg = dataclasses.replace(cfg, probe_during=False, traces_dir=str(Path(cfg.traces_dir) / "sizing"),
                                  probe_level="tiny", probe_rounds=1)
    with placement(cfg) as place:
        trace, choice = choose_trace(cfg, place, progress)
    return trace, choice


def run_split(args) -> int:
    from asprof.cluster.netns import why_unavailable
    from asprof.traces.io import load_trace
    from asprof.validate.run import predict_run, run_validation
    from fidelity_machine import OtherLoad, load, wait_quiet
    from asprof.errors import AsprofError
    from fidelity_records import cell_record, failure_record, resim_record, write_cell
    from fidelity_stats import summarise

    shaped = why_unavailable() is None
    draws = draw_split(args.seed, args.cells, shaped=shaped)
    records = Path(args.records or default_records(args.split, args.seed))
    if args.split == "report" and any(records.glob("cell-*.json.gz")):
        print(f"bench_fidelity: {records} already holds a report split: it is recorded once, never again "
              "(draw a fresh seed)", file=sys.stderr)
        return 2
    print(f"bench_fidelity --random: split {args.split}, seed {args.seed}, {args.cells} cells in {len(draws)} "
          f"configurations, budget {args.budget:g} s a pass; records -> {records}; {load()}", flush=True)
    if not shaped:
        print(f"  (no namespaces here: {why_unavailable()}; every link drawn as unshaped loopback)", flush=True)
    cells, t0 = [], time.monotonic()

    def say(msg):
        if "probing" in msg:
            print(f"    {msg}", flush=True)

    for draw in draws:
        print(f"{draw.label()}: {', '.join(draw.optimizers)}", flush=True)
        cfg, mc = validate_config(draw, args, Path(args.out) / "models")
        wait_quiet(args.max_busy, args.patience)
        trace, _ = sizing_trace(cfg, say)
        skip = cfg.skip

        def predict_step(batch):
            """The slowest optimizer's mean step over sampled replicas (the sampled steps can be
            far from the median ones on a noisy trace: the mean is what a pass costs)."""
            c = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, batch=batch), replicas=4)
            return max(float(np.mean([r[skip:] for r in predict_run(c, trace, s)[0]])) for s in c.specs())

        sizing = size_cell(draw, predict_step, args.budget, args.min_compared, args.max_steps)
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, batch=sizing["batch"]), steps=sizing["steps"])
        print(f"  sized: batch {sizing['batch']} (drawn {draw.batch}), {sizing['steps']} steps, predicted step "
              f"{sizing['predicted_step_s'] * 1e3:.0f} ms", flush=True)
        start = time.monotonic()
        try:
            with OtherLoad() as other:
                res = run_validation(cfg, progress=say)
        except AsprofError as e:  # recorded as it happened: a split is never re-drawn
            failed = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
                      "load": load(), "failed": str(e)}
            path = write_cell(records, failure_record(args.split, args.seed, draw, sizing, cfg, mc, failed))
            print(f"  FAILED: {e} (recorded in {path})", flush=True)
            continue
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        Path(cfg.out, "validate.json").write_text(json.dumps(res.to_dict()))
        recorded = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
                    "load": load(), "other_cores": other.mean, "wall_s": time.monotonic() - start,
                    "shaped_links": shaped, "trace_choice": res.trace.how, "notes": list(res.notes)}
        record = cell_record(args.split, args.seed, draw, sizing, cfg, res, load_trace(res.trace.path), mc, recorded)
        path = write_cell(records, record)
        got = resim_record(record)
        cells += got
        for c in got:
            lo, hi = c["mean_error_ci"]
            print(f"  {c['label']:14s} meas {c['measured_mean_s'] * 1e3:8.1f} ms  pred {c['predicted_mean_s'] * 1e3:8.1f} ms  "
                  f"err {c['mean_error_pct']:+6.1f}% [{lo:+.1f}, {hi:+.1f}]  band {c['band_fraction']:4.0%}  "
                  f"passes {c['passes_disagree_pct']:+.1f}%{'  NOISE-LIMITED' if c['noise_limited'] else ''}  "
                  f"worst phase {c['worst_phase']} {c['worst_phase_error_pct']:+.0f}%  (live {c['live_mean_error_pct']:+.1f}%)",
                  flush=True)
        print(f"  recorded {path} ({path.stat().st_size / 1024:.0f} KiB, {recorded['wall_s']:.0f} s, "
              f"others {other.mean:.2f} cores)", flush=True)
    if not cells:
        print("no configuration ran to the end", file=sys.stderr)
        return 1
    summary = summarise(cells)
    print_summary(summary, f"{args.split}-{args.seed}", (time.monotonic() - t0) / 60)
    return 0


def print_summary(s: dict, name: str, minutes: float | None = None) -> None:
    def ci(key):
        lo, hi = s[key]
        return f"[{lo:.1f}, {hi:.1f}]"

    took = f"; {minutes:.1f} min" if minutes is not None else ""
    print(f"\n{name}: {s['cells']} cells in {s['groups']} configurations: |error of the mean step| median "
          f"{s['median_abs_error_pct']:.1f}% {ci('median_abs_error_ci')}, max {s['max_abs_error_pct']:.1f}% "
          f"{ci('max_abs_error_ci')}; band {s['band_fraction']:.0%} [{s['band_ci'][0]:.0%}, {s['band_ci'][1]:.0%}], "
          f"smallest cell {s['min_cell_band_fraction']:.0%}; mean signed {s['mean_signed_error_pct']:+.1f}%; "
          f"ranking right in {s['ranking_correct_groups']}/{s['ranking_groups']} configurations; "
          f"{s['noise_limited_cells']} cell(s) noise-limited ({s['confidence']:.0%} intervals)"
          + (f"; {s['failed_configurations']} configuration(s) FAILED" if s.get("failed_configurations") else "") + took)
