"""`asprof plot TRACE`: write PNG plots of a trace."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(help="""Write PNG plots of a trace: throughput vs size per framework/dtype, launch
latency, memory bandwidth, linear algebra time, memory and step time over training steps, and
all-reduce bandwidth vs size with the fitted ring model.

TRACE is a trace file or a bundled profile's name. PNGs go to --out (default plots/<trace name>/).""")
@click.argument("trace", metavar="TRACE")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the PNGs (default: plots/<trace name>).")
def command(trace, out_dir):
    from asprof.cli.show import _load
    from asprof.errors import AsprofError
    from asprof.probe.plots import plot_trace

    loaded = _load(trace)
    stem = Path(trace).stem
    out_dir = out_dir or Path("plots") / stem
    try:
        written = plot_trace(loaded, out_dir, stem=stem)
    except OSError as e:
        raise AsprofError(f"{out_dir}: cannot write plots here ({e.strerror or e})") from None
    if not written:
        click.echo(f"{trace}: no probe records to plot")
        return 1
    for p in written:
        click.echo(p)
    return 0
