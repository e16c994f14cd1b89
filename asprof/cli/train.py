"""`asprof train`: train the small LLaMA with Adam, KPOP or TopKPOP, single-process or distributed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from asprof.cli.backend_option import backend_option
from asprof.cli.options import print_specs, run_options
from asprof.errors import AsprofError


@click.command(help="""Train the small LLaMA on byte-level text with each optimizer given (Adam, KPOP,
TopKPOP, Eigen-Adam, SOAP, RACS, Alice, Alice-0) and report loss, tokens/s and per-step time (the
first --warmup + 1 steps are left out of the timing summary).

The run flags (--model, --batch per node, --global-batch, --seq, --optimizer, --sparsity, -f,
--warmup, ...) mean what they mean in `asprof simulate` and `asprof validate`. Data defaults to
the Python standard library's own source (present on every installation); --data FILE trains on
your text. --nodes N runs N local ranks over MLX's ring backend, --hostfile F the ranks of an
mlx.launch hostfile. --instrument adds a second pass from the same seed that times the phases of
each step (fwd_bwd, factor_ema, refresh, grad_allreduce, optimizer). Writes a JSON result and a
loss plot (PNG) per optimizer to --out.

\b
Examples:
  asprof train --model tiny --optimizer adam,kpop --steps 50
  asprof train --model small --optimizer topkpop --sparsity 0.1 --nodes 2 --instrument""")
@run_options
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--nodes", type=int, default=1, show_default=True, help="Local ranks (ring backend over loopback).")
@click.option("--hostfile", type=click.Path(dir_okay=False), default=None, help="mlx.launch hostfile.")
@backend_option()
@click.option("--data", "data", type=click.Path(dir_okay=False), default=None, help="Train on this file's bytes.")
@click.option("--eval-every", type=int, default=0, show_default=True, help="Validation every N steps (0: at the end).")
@click.option("--instrument", is_flag=True, help="Also time the phases of every step (second pass).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Directory for the JSON result and the loss plot.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON on stdout (a list of results when several optimizers are trained).")
@click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True,
              help="Distributed runs: stop all ranks after this many seconds.")
def command(choices, print_spec, steps, seed, nodes, hostfile, backend, data, eval_every, instrument, out_dir, as_json,
            timeout_s):
    from asprof.train.config import TrainConfig

    world = nodes
    if hostfile is not None:
        from asprof.cluster.launch import read_hostfile

        world = len(read_hostfile(hostfile, backend))
    specs = choices.specs(world)
    if print_spec:
        print_specs(specs, world)
        return 0
    if data is not None:
        from asprof.train.data import read_data

        read_data(data, check_only=True)  # unreadable: one line before any run starts
    configs = [TrainConfig(spec=spec, steps=steps, seed=seed, data=data, eval_every=eval_every,
                           instrument=instrument, nodes=nodes, hostfile=hostfile, backend=backend,
                           timeout_s=timeout_s)
               for spec in specs]  # every run checked before the first starts
    _check_writable(out_dir)
    from asprof.train.plot import plot_result
    from asprof.train.runner import run_training

    results = []
    for config in configs:
        label = config.spec.optimizer.label
        if len(configs) > 1:
            print(f"== {label}", file=sys.stderr, flush=True)
        result = run_training(config, on_progress=_Progress(steps))
        if "reference" in result.host.get("blas", ()):
            print("asprof train: note: MLX ran on the reference BLAS (slow matmul and eigh on Linux); install a "
                  "fast one (Debian: apt-get install libopenblas0-pthread; asprof preloads it) or set LD_PRELOAD "
                  "(docs/optimizers.md, Benchmarks)", file=sys.stderr)
        stem = f"train-{label.replace(' s=', '-s')}-{result.world_size}r-{time.strftime('%Y%m%d-%H%M%S')}"
        json_path = result.save(out_dir / f"{stem}.json")
        png_path = plot_result(result, out_dir / f"{stem}.png")
        results.append(result)
        if not as_json:
            click.echo(render(result))
            click.echo(f"result: {json_path}\nplot:   {png_path}")
    if as_json:
        dicts = [r.to_dict() for r in results]
        click.echo(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=1))
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
