"""`asprof train`: train the small LLaMA with Adam, KPOP or TopKPOP, single-process or distributed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from asprof.errors import AsprofError


@click.command(help="""Train the small LLaMA on byte-level text with Adam, KPOP or TopKPOP (or the
structured-Fisher optimizers Eigen-Adam, SOAP, RACS, Alice, Alice-0) and report loss, tokens/s and
per-step time (the first --warmup + 1 steps are left out of the timing summary).

Data defaults to the Python standard library's own source (present on every installation);
--data FILE trains on your text. --nodes N runs N local ranks over MLX's ring backend,
--hostfile F the ranks of an mlx.launch hostfile; the global --batch is split over the ranks.
--instrument adds a second pass from the same seed that times the phases of each step
(fwd_bwd, factor_ema, refresh, grad_allreduce, optimizer). Writes a JSON result and a loss
plot (PNG) to --out.""")
@click.option("--optimizer", type=click.Choice(["adam", "kpop", "topkpop", "eigen-adam", "soap", "racs", "alice",
                                               "alice-0"]), default="adam", show_default=True)
@click.option("--sparsity", type=float, default=0.1, show_default=True, help="TopKPOP s in (0, 1].")
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Learning rate [default: Adam 1e-3, KPOP/TopKPOP 3e-3: the sweep in docs/optimizers.md; "
                   "Eigen-Adam/SOAP 3e-3, RACS/Alice/Alice-0 0.02: the papers'].")
@click.option("--model", default="small", show_default=True, help="Preset name or JSON model config (vocab is set to 256).")
@click.option("--batch", type=int, default=8, show_default=True, help="Global batch (sequences), split over the ranks.")
@click.option("--seq", type=int, default=None, help="Sequence length [default: the preset's].")
@click.option("--frequency", type=int, default=10, show_default=True, help="Refresh the eigenbases every f steps.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Refresh every step while t < warmup.")
@click.option("--alpha", type=float, default=0.95, show_default=True, help="Factor EMA decay.")
@click.option("--eig-method", type=click.Choice(["eigh", "power"]), default="eigh", show_default=True)
@click.option("--interval", type=int, default=None,
              help="Eigen-Adam/SOAP/Alice: refresh the basis every K steps [default: 10, Alice 200 (the papers')]. "
                   "--frequency, --warmup, --alpha, --eig-method are KPOP's.")
@click.option("--rank", type=float, default=0.25, show_default=True,
              help="Alice/Alice-0 rank r: a fraction (<= 1) of each matrix's smaller side, or a count.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--nodes", type=int, default=1, show_default=True, help="Local ranks (ring backend over loopback).")
@click.option("--hostfile", type=click.Path(dir_okay=False), default=None, help="mlx.launch hostfile.")
@click.option("--data", "data", type=click.Path(dir_okay=False), default=None, help="Train on this file's bytes.")
@click.option("--eval-every", type=int, default=0, show_default=True, help="Validation every N steps (0: at the end).")
@click.option("--instrument", is_flag=True, help="Also time the phases of every step (second pass).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Directory for the JSON result and the loss plot.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True,
              help="Distributed runs: stop all ranks after this many seconds.")
def command(optimizer, sparsity, steps, lr, model, batch, seq, frequency, warmup, alpha, eig_method, interval, rank,
            seed, nodes, hostfile, data, eval_every, instrument, out_dir, as_json, timeout_s):
    from asprof.train.config import TrainConfig
    from asprof.train.plot import plot_result
    from asprof.train.runner import run_training

    config = TrainConfig(optimizer=optimizer, steps=steps, lr=lr, model=model, batch=batch, seq=seq,
                         sparsity=sparsity, frequency=frequency, warmup=warmup, alpha=alpha,
                         eig_method=eig_method, interval=interval, rank=rank, seed=seed, data=data,
                         eval_every=eval_every,
                         instrument=instrument, nodes=nodes, hostfile=hostfile, timeout_s=timeout_s)
    _check_writable(out_dir)
    result = run_training(config, on_progress=_Progress(steps))
    stem = f"train-{optimizer}" + (f"-s{sparsity:g}" if optimizer == "topkpop" else "") + \
        f"-{result.world_size}r-{time.strftime('%Y%m%d-%H%M%S')}"
    json_path = result.save(out_dir / f"{stem}.json")
    png_path = plot_result(result, out_dir / f"{stem}.png")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        click.echo(render(result))
        click.echo(f"result: {json_path}\nplot:   {png_path}")
    return 0


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".asprof-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise AsprofError(f"--out {out_dir}: cannot write here ({e.strerror or e}); pick another directory") from None


class _Progress:
    """A line every ~5% of the steps (and the first and last) on stderr."""

    def __init__(self, steps: int):
        self.every = max(1, steps // 20)
        self.start = time.monotonic()

    def __call__(self, phase, step, steps, loss, seconds):
        if step % self.every and step != steps - 1 and step != 0:
            return
        loss_s = f"loss {loss:.4f}" if loss == loss else ""
        time_s = f"{seconds * 1e3:7.1f} ms/step" if seconds == seconds else ""
        name = "" if phase == "train" else f"[{phase}] "
        print(f"{name}step {step + 1:>5}/{steps}  {loss_s}  {time_s}  ({time.monotonic() - self.start:.0f} s)",
              file=sys.stderr, flush=True)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n} B"


def render(result) -> str:
    c, s, m = result.config, result.summary, result.model
    opt = c["optimizer"] + (f" (s={c['sparsity']:g})" if c["optimizer"] == "topkpop" else "")
    lines = [
        f"{opt} · {m['name']} ({m['n_params'] / 1e6:.2f} M params, vocab {m['vocab']}) · "
        f"{result.world_size} rank(s) · batch {c['batch']}×{m['seq_len']} · lr {c['learning_rate']:g}",
        f"data: {result.corpus['source']} [{result.corpus['fingerprint']}]",
        f"loss: train {s['final_train_loss']:.4f}, validation {s['final_val_loss']:.4f} after {len(result.losses)} steps",
        f"step time: mean {s['step_time_mean_s'] * 1e3:.1f} ms, median {s['step_time_median_s'] * 1e3:.1f} ms, "
        f"p95 {s['step_time_p95_s'] * 1e3:.1f} ms over {s['steps_timed']} steps ({s['skipped_steps']} skipped) · "
        f"{s['tokens_per_s']:.0f} tokens/s",
        f"optimizer state: {_bytes(result.state_bytes)} (closed form {_bytes(result.closed_form_state_bytes)})",
    ]
    if result.world_size > 1:
        tags = sorted({k for b in result.bytes_per_step for k in b})
        per = {t: sum(b.get(t, 0) for b in result.bytes_per_step) / len(result.bytes_per_step) for t in tags}
        lines.append("all-reduce payload per step (mean): " + ", ".join(f"{t} {_bytes(v)}" for t, v in per.items()))
        digests = set(result.basis_digests)
        if result.basis_digests[0] is not None:
            lines.append(f"eigenbases identical on all ranks: {'yes' if len(digests) == 1 else 'NO'}")
    if result.phases_s:
        ph = s["instrumented"]["phase_mean_s"]
        order = [k for k in ("fwd_bwd", "factor_ema", "refresh", "grad_allreduce", "optimizer") if k in ph]
        lines.append("phases (instrumented pass, mean per step): " +
                     ", ".join(f"{k} {ph[k] * 1e3:.1f} ms" for k in order) +
                     f" · step {s['instrumented']['step_time_mean_s'] * 1e3:.1f} ms")
    return "\n".join(lines)
