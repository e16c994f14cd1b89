"""The user's path, end to end (issue 16): probe a 2-rank cluster once, simulate from that
trace, train for real on the same cluster with the same configuration — three commands, the
way a user runs them, no `asprof validate` in between:

    asprof probe --nodes 2 --quick --out T
    asprof simulate --trace T --nodes 2 --model M --batch B --seq S --optimizer O --warmup W --steps N --json
    asprof train --nodes 2 --model M --batch B --seq S --optimizer O --warmup W --steps N --json

for each of CONFIGS (six workloads: three models, five optimizers). Prints per configuration the
predicted and measured mean step over the steps train's timing summary counts (t ≥ warm-up + 1,
asprof.spec.timed_from; the simulated steps' mean over the same indices) and the error; then
the median and max |error|. Goal (issue 16): every mean step within 5 %.

    python benchmarks/bench_user_path.py                       # quick probe, 40 steps (about 15 min on 2 cores)
    python benchmarks/bench_user_path.py --level tiny --steps 12   # a smoke run

Timings on a machine others are using are not figures: the load before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asprof.spec import timed_from  # noqa: E402
from fidelity_machine import load  # noqa: E402

# (model, batch per node, seq, optimizer): a step of ~0.1-0.6 s per rank pair on a 2-core VM
CONFIGS = (("tiny", 8, 64, "adam"), ("tiny", 8, 64, "kpop"), ("tiny", 4, 128, "topkpop"),
           ("kpop-1.7m", 2, 64, "adam"), ("kpop-1.7m", 2, 64, "soap"), ("small", 1, 64, "racs"))


def asprof(*args: str) -> str:
    """Run one asprof command as a user would; its stdout (a failure ends the benchmark)."""
    cmd = [sys.executable, "-c", "from asprof.cli import run; run()", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_user_path: `asprof {' '.join(args)}` failed ({out.returncode}): {out.stderr[-1500:]}")
    return out.stdout


def run_flags(model: str, batch: int, seq: int, optimizer: str, warmup: int, steps: int) -> list[str]:
    return ["--nodes", "2", "--model", model, "--batch", str(batch), "--seq", str(seq), "--optimizer", optimizer,
            "--warmup", str(warmup), "--steps", str(steps), "--json"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", choices=("quick", "tiny", "full"), default="quick", help="the probe's level")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--configs", type=int, default=len(CONFIGS), help="the first N configurations")
    ap.add_argument("--out", default="bench-user-path")
    ap.add_argument("--trace", default=None, help="skip the probe: simulate from this trace")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench_user_path: {args.configs} configurations on 2 local ranks, {args.steps} steps "
          f"(first {timed_from(args.warmup)} not timed); {load()}", flush=True)
    trace = args.trace
    if trace is None:
        trace = str(out / "trace.json")
        start = time.monotonic()
        asprof("probe", "--nodes", "2", "--level", args.level, "--out", trace)
        print(f"asprof probe --nodes 2 --level {args.level}: {trace} ({time.monotonic() - start:.0f} s)", flush=True)
    skip, rows = timed_from(args.warmup), []
    for model, batch, seq, optimizer in CONFIGS[:args.configs]:
        flags = run_flags(model, batch, seq, optimizer, args.warmup, args.steps)
        sim = json.loads(asprof("simulate", "--trace", trace, *flags))
        steps_s = sim["runs"][0]["results"][0]["step_times_s"]
        predicted = statistics.fmean(steps_s[skip:])
        train = json.loads(asprof("train", *flags, "--out", str(out / "runs")))
        measured = train["summary"]["step_time_mean_s"]
        err = 100.0 * (predicted - measured) / measured
        rows.append((model, batch, seq, optimizer, predicted, measured, err))
        print(f"{model:10s} batch {batch:2d} seq {seq:4d} {optimizer:8s} predicted {predicted * 1e3:8.1f} ms  "
              f"measured {measured * 1e3:8.1f} ms  error {err:+6.1f}%", flush=True)
    errs = [abs(r[-1]) for r in rows]
    print(f"\nuser path over {len(rows)} configurations: |error of the mean step| median {statistics.median(errs):.1f}%, "
          f"max {max(errs):.1f}% (goal: each within 5%); {load()}")
    (out / "user_path.json").write_text(json.dumps(
        {"args": vars(args), "trace": trace, "rows": [dict(zip(("model", "batch", "seq", "optimizer", "predicted_mean_s",
                                                                  "measured_mean_s", "error_pct"), r)) for r in rows]},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
