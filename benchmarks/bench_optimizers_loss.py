"""Validation loss of Adam, KPOP and TopKPOP (s = 1, 0.5, 0.1), and of the structured-Fisher
optimizers Eigen-Adam, SOAP, RACS, Alice, Alice-0 (paper 004), after the same number of steps on
the default corpus, with learning rates picked by a small sweep (recorded in the output).

1. Sweep: each optimizer in --sweep trains --sweep-steps steps at every rate in --lrs; the rate with
   the lowest validation loss wins. TopKPOP takes KPOP's rate (same update scale; a sweep per
   sparsity would triple the cost). Likewise each of --structured-sweep at every rate in
   --structured-lrs (RACS and Alice, whose λ the paper scales by α); Alice-0 takes Alice's rate,
   Eigen-Adam and SOAP their default (SOAP's reference 3e-3).
2. Final: every configuration trains --steps steps from the same seed on the same batches.
Constant learning rate, no weight decay; Adam/KPOP: betas (0.9, 0.999), α = 0.95, warm-up 10,
f = 10; the structured optimizers: the paper's settings (asprof.optimizers defaults).

    python benchmarks/bench_optimizers_loss.py --out runs/bench_loss.json
    python benchmarks/bench_optimizers_loss.py --only-structured     # Adam (its default rate) + the new rows

On Linux, preload OpenBLAS (MLX's CPU wheel links the reference BLAS):
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3:/usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from asprof.spec import DEFAULT_LR, OptimizerSpec
from asprof.train.config import TrainConfig
from asprof.train.data import load_corpus
from asprof.train.loop import train_process
from asprof.train.model import n_params
from asprof.train.result import combine


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--sweep-steps", type=int, default=80)
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3,1e-2")
    ap.add_argument("--sweep", default="adam,kpop", help="optimizers whose rate is swept")
    ap.add_argument("--structured", default="eigen-adam,soap,racs,alice,alice-0",
                    help="structured-Fisher optimizers to add ('' for none)")
    ap.add_argument("--structured-sweep", default="racs,alice", help="of those, whose rate is swept")
    ap.add_argument("--structured-lrs", default="2.5e-3,5e-3,1e-2,2e-2")
    ap.add_argument("--only-structured", action="store_true",
                    help="skip the KPOP/TopKPOP rows and Adam's sweep (Adam runs once at its default rate)")
    ap.add_argument("--final", default=None,
                    help="only these final runs, no sweep (rates: DEFAULT_LR): comma-separated OPT[:s][/KEY=VALUE...] "
                         "with OptimizerSpec keys (str or int), e.g. 'kpop,topkpop:0.1,topkpop:0.1/eig_method=eigh'")
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write every run's numbers to this JSON file")
    return ap.parse_args()


def run(config, corpus, log, options=None):
    t = time.monotonic()
    record = train_process(config, None, corpus)
    result = combine(config, [record.to_dict()], corpus.describe(), 0)
    row = {"optimizer": config.optimizer, "sparsity": config.sparsity if config.optimizer == "topkpop" else None,
           "lr": config.learning_rate, "steps": config.steps, "val_loss": result.final_val_loss,
           "train_loss_last10": sum(result.losses[-10:]) / len(result.losses[-10:]),
           "step_time_mean_s": result.summary["step_time_mean_s"], "wall_s": time.monotonic() - t,
           "options": options or {}}
    log(f"  {label(row):<18} lr {row['lr']:<7g} steps {row['steps']:>4}  val {row['val_loss']:.4f}  "
        f"train(last 10) {row['train_loss_last10']:.4f}  {row['step_time_mean_s'] * 1e3:.0f} ms/step  ({row['wall_s']:.0f} s)")
    return row


def label(row):
    return row["optimizer"] + (f" s={row['sparsity']:g}" if row["sparsity"] is not None else "") + \
        "".join(f" {k}={v}" for k, v in row.get("options", {}).items())


def final_only(spec: str, base: TrainConfig, steps: int, corpus, log) -> list[dict]:
    """--final: each OPT[:s][/KEY=VALUE...] at its default rate, ``steps`` steps."""
    rows = []
    for item in spec.split(","):
        head, *opts = item.split("/")
        opt, _, s = head.partition(":")
        options = {}
        for o in opts:
            k, _, v = o.partition("=")
            field = next(f for f in fields(OptimizerSpec) if f.name == k)
            options[k] = v if field.type in ("str", "str | None") else int(float(v))
        cfg = base.evolve(optimizer=opt, sparsity=float(s or 1.0), lr=DEFAULT_LR[opt], steps=steps, **options)
        rows.append(run(cfg, corpus, log, options))
    return rows


def main():
    a = parse()

    def log(msg):
        print(msg, flush=True)

    corpus = load_corpus()
    base = TrainConfig.build(model=a.model, batch=a.batch, seq=a.seq, seed=a.seed, eval_batches=a.eval_batches,
                       steps=a.sweep_steps)
    from asprof.train.model import LLaMA

    cfg = base.model_config()
    log(f"model {cfg.name} ({n_params(LLaMA(cfg)) / 1e6:.2f} M params), batch {a.batch} x {a.seq}, "
        f"data {corpus.source} [{corpus.fingerprint}], validation {a.eval_batches} x {a.batch} windows")
    lrs = [float(x) for x in a.lrs.split(",")]
    t0 = time.monotonic()
    if a.final:
        log(f"\nfinal ({a.steps} steps each, default rates, no sweep):")
        final, sweep, best = final_only(a.final, base, a.steps, corpus, log), [], {}
    else:
        sweep, best, final = sweep_and_final(a, base, lrs, corpus, log)
    log(f"\ntotal {time.monotonic() - t0:.0f} s\n")
    log("| optimizer | lr | validation loss | train loss (last 10 steps) | ms / step |")
    log("|---|---|---|---|---|")
    for r in final:
        log(f"| {label(r)} | {r['lr']:g} | {r['val_loss']:.4f} | {r['train_loss_last10']:.4f} | "
            f"{r['step_time_mean_s'] * 1e3:.0f} |")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"args": vars(a), "argv": sys.argv, "corpus": corpus.describe(),
                                           "sweep": sweep, "picked": best, "final": final}, indent=1))


def sweep_and_final(a, base, lrs, corpus, log):
    sweep, best = [], {}
    structured = [o for o in a.structured.split(",") if o]
    slrs = [float(x) for x in a.structured_lrs.split(",")]
    log(f"\nsweep ({a.sweep_steps} steps each):")
    for opt in ([] if a.only_structured else a.sweep.split(",")) + \
            [o for o in a.structured_sweep.split(",") if o in structured]:
        rates = slrs if opt in structured else lrs
        rows = [run(base.evolve(optimizer=opt, lr=lr, sparsity=1.0), corpus, log) for lr in rates]
        sweep += rows
        best[opt] = min(rows, key=lambda r: r["val_loss"])["lr"]
    if not a.only_structured:
        best.setdefault("topkpop", best.get("kpop", lrs[0]))
    best.setdefault("adam", DEFAULT_LR["adam"])
    if "alice" in best:
        best.setdefault("alice-0", best["alice"])
    for opt in structured:
        best.setdefault(opt, DEFAULT_LR[opt])
    log(f"picked: {', '.join(f'{k} {v:g}' for k, v in best.items())}")
    final = []
    log(f"\nfinal ({a.steps} steps each):")
    configs = [("adam", 1.0)] if a.only_structured else \
        [("adam", 1.0), ("kpop", 1.0), ("topkpop", 1.0), ("topkpop", 0.5), ("topkpop", 0.1)]
    for opt, s in configs + [(o, 1.0) for o in structured]:
        final.append(run(base.evolve(optimizer=opt, sparsity=s, lr=best[opt], steps=a.steps), corpus, log))
    return sweep, best, final


if __name__ == "__main__":
    main()
