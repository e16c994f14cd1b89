"""`asprof probe`: measure this machine (or a cluster) and write a versioned trace."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from asprof.cli.backend_option import backend_option
from asprof.errors import AsprofError


class _Progress:
    """One updating line on a terminal (a bar over the probes + the current step); one line
    per step otherwise, so logs keep the whole story."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.width = 0

    def __call__(self, step) -> None:
        elapsed = time.monotonic() - self.start
        if not self.tty:
            print(f"{elapsed:6.1f}s [{step.index}/{step.total} {step.probe}] {step.message}", file=self.stream, flush=True)
            return
        done = max(step.index - 1, 0)
        bar = "#" * (10 * done // max(step.total, 1))
        line = f"[{bar:<10}] {step.index}/{step.total} {step.probe} {elapsed:5.0f}s  {step.message}"[:120]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _split_only(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(dict.fromkeys(x.strip() for x in value.split(",") if x.strip()))  # keep order, drop repeats
    if not names:
        raise AsprofError("--only needs probe names, e.g. --only blas,launch")
    return names


@click.command(help="""Measure this machine (or a cluster) and write a versioned trace.

\b
Probes: blas (matmul/matvec/VJP FLOP/s), launch (cold/warm op latency), membw (copy/triad
bandwidth), linalg (eigh/qr on MLX's CPU stream), memory (RSS and page faults over a training
loop), allreduce (mx.distributed.all_sum bandwidth and a ring latency/bandwidth fit; only
with --nodes or --hostfile). Every framework/device present is measured (MLX gpu/cpu,
PyTorch mps/cuda/cpu); absent ones are recorded as skipped.

\b
Writes traces/<host>-<UTC time>.json (or --out) after every probe, so Ctrl-C keeps what was
measured. Then: asprof show TRACE, asprof plot TRACE.

\b
With --nodes N or --hostfile FILE it probes the cluster as `asprof validate` does: the compute
probes (blas, launch, membw, linalg; MLX) on every rank at once — ranks sharing a machine share
its cores —, then the all-reduce ring, into traces/<host>-<N>r-<link>-<UTC>.json, the trace
`asprof validate` and `asprof simulate --trace` then use for that cluster.""")
@click.option("--quick", is_flag=True, help="Fewer sizes and shorter timing budgets: about a minute.")
@click.option("--only", metavar="LIST", help="Comma-separated probes to run, e.g. blas,launch.")
@click.option("--nodes", type=int, metavar="N", help="Probe a cluster of N local ranks (ring or mpi backend): "
              "compute on every rank at once, then the all-reduce.")
@click.option("--hostfile", type=click.Path(path_type=Path), help="Probe the cluster of an mlx.launch hostfile's hosts.")
@backend_option()
@click.option("--out", type=click.Path(path_type=Path), help="Trace file to write (default: traces/<host>-<UTC>.json).")
@click.option("--level", type=click.Choice(["full", "quick", "tiny"]), hidden=True,
              help="Sweep level (tests use 'tiny'); --quick is 'quick'.")
def command(quick, only, nodes, hostfile, backend, out, level):
    from asprof.probe.cluster import run_cluster_probe
    from asprof.probe.runner import ProbeConfig, ProbeInterrupted, run_probes

    config = ProbeConfig(level=level or ("quick" if quick else "full"), only=_split_only(only),
                         nodes=nodes, hostfile=hostfile, out=out, backend=backend)
    progress = _Progress()
    start = time.monotonic()
    try:
        run = run_cluster_probe(config, progress) if config.cluster else run_probes(config, progress)
    except ProbeInterrupted as e:
        progress.close()
        kept = ", ".join(e.run.finished) or "no finished probe"
        click.echo(f"asprof probe: interrupted; kept {kept} in {e.run.path}", err=True)
        return 130
    finally:
        progress.close()
    t = run.trace
    warnings = sum(len(r.timing.warnings) for r in t.records if r.timing)
    click.echo(f"wrote {run.path}: {len(t.records)} records from {len(run.finished)} probes, "
               f"{len(t.skipped)} skipped, {warnings} timing warnings ({time.monotonic() - start:.0f} s)")
    click.echo(f"next: asprof show {run.path}   |   asprof plot {run.path}")
    return 0
