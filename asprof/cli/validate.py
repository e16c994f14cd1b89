"""`asprof validate`: train for real on a cluster and compare with the simulator's prediction."""

from __future__ import annotations

import sys
import time

import click

from asprof.cli.backend_option import backend_option
from asprof.cli.options import print_specs, run_options
from asprof.errors import AsprofError


@click.command(help="""Train the small LLaMA for real with each optimizer on a cluster, simulate exactly the
same run from the cluster's probe trace, and print predicted vs measured step and phase times
(docs/validate.md). Exits 1 when a mean-step error exceeds --tolerance, 3 when a rank fails.

\b
Ranks: --nodes N local processes on MLX's ring over loopback; with --netns-rate R they run
in network namespaces joined by links shaped to R Mbit/s (tbf; needs root); --hostfile runs
them on an mlx.launch hostfile's hosts (on Macs, the Thunderbolt ring).
Calibration: --trace, else the newest trace in ./traces probed on this same cluster (host, BLAS,
threads, ranks, link), else the cluster is probed first (compute on every rank at once) and the
trace saved there.

\b
Examples:
  asprof validate --nodes 2 --model tiny --batch 8
  asprof validate --nodes 4 --netns-rate 200 --optimizer adam,topkpop --sparsity 0.1
  asprof validate --hostfile macs.json --model small --batch 4 --seq 128 --tolerance 5

The run flags (--model, --batch per node, --seq, --optimizer, --sparsity, -f, --warmup, ...) mean
what they mean in `asprof simulate` and `asprof train`; the comparison starts after step
--warmup + 1. On a CPU-only machine use a small model (--model tiny).""")
@click.option("--nodes", type=int, default=None, help="Local ranks (default 1 without --hostfile).")
@click.option("--hostfile", default=None, help="An mlx.launch hostfile: one rank per host.")
@backend_option()
@click.option("--netns-rate", type=float, default=None, metavar="MBIT",
              help="With --nodes: network-namespace hosts whose links are shaped to MBIT Mbit/s (root).")
@run_options
@click.option("--steps", default=30, type=int, show_default=True, help="Training steps per optimizer.")
@click.option("--trace", default=None, help="Calibrate from this trace instead of a matching one.")
@click.option("--tolerance", default=10.0, type=float, show_default=True, metavar="PCT",
              help="Largest acceptable |mean-step error| in percent.")
@click.option("--out", default="validate-out", show_default=True, help="Directory for validate.json and validate.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of tables.")
@click.option("--traces-dir", default="traces", show_default=True, help="Where matching traces are looked for and saved.")
@click.option("--probe-during", is_flag=True,
              help="Measure the compute probes between the training steps (half the time) and predict each "
                   "run from the records taken during it: probe and training see the same minutes.")
@click.option("--seed", default=0, type=int, hidden=True)
@click.option("--replicas", default=20, type=int, hidden=True, help="Simulated replicas for the band.")
@click.option("--probe-level", default="quick", hidden=True)
@click.option("--probe-rounds", default=3, type=int, hidden=True)
@click.option("--timeout", "timeout_s", default=1800.0, type=float, hidden=True)
def command(nodes, hostfile, backend, netns_rate, choices, print_spec, steps, trace, tolerance, out, as_json, traces_dir,
            probe_during, seed, replicas, probe_level, probe_rounds, timeout_s):
    from asprof.traces.io import check_writable
    from asprof.validate.config import ValidateConfig
    from asprof.validate.report import render_json, render_text, write_outputs
    from asprof.validate.run import run_validation

    if nodes is None and hostfile is None and netns_rate is not None:
        raise AsprofError("--netns-rate needs --nodes N (the namespace hosts to build)")
    cfg = ValidateConfig(nodes=nodes if nodes is not None or hostfile else 1, hostfile=hostfile, backend=backend,
                         netns_rate=netns_rate, run=choices, steps=steps, trace=trace, tolerance=tolerance, out=out, seed=seed,
                         traces_dir=traces_dir, probe_level=probe_level, probe_rounds=probe_rounds, replicas=replicas,
                         timeout_s=timeout_s, probe_during=probe_during)
    if print_spec:
        print_specs(cfg.specs(), cfg.world_size)
        return 0
    check_writable(f"{out}/validate.json")
    # SIGTERM unwinds like Ctrl-C, so the ranks are stopped and a namespace ring is removed
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"{time.monotonic() - start:6.1f}s {msg}", file=sys.stderr, flush=True)

    result = run_validation(cfg, progress)
    paths = write_outputs(result, out)
    click.echo(render_json(result) if as_json else render_text(result, paths))
    return 0 if result.passed else 1
