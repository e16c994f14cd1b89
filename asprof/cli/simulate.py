"""`asprof simulate`: predict step time, its breakdown, bytes sent and memory on N nodes."""

from __future__ import annotations

import click

from asprof.cli.backend_option import backend_option
from asprof.cli.options import comma_list, print_specs, run_options
from asprof.errors import AsprofError


def _slow(ctx, param, values):
    out = []
    for v in values:
        try:
            who, factor = v.split("=")
            node, _, lane = who.partition(".")
            out.append((int(node), lane or "all", float(factor)))
        except ValueError:
            raise click.BadParameter(f"expected NODE=FACTOR or NODE.LANE=FACTOR (lane gpu, cpu or link), got {v!r}") from None
    return tuple(out)


def _pairs(kind, what):
    """NAME=VALUE options, repeatable and/or comma-separated (``--speedup soap=1.5,alice=2``)."""
    def parse(ctx, param, values):
        out = []
        for v in values:
            for item in (x for x in v.split(",") if x.strip()):
                name, sep, value = item.partition("=")
                try:
                    if not sep or not name.strip():
                        raise ValueError
                    out.append((name.strip(), kind(value)))
                except ValueError:
                    raise click.BadParameter(f"expected OPTIMIZER={what}, got {item!r}") from None
        return tuple(out)
    return parse


def _node_traces(ctx, param, values):
    out = []
    for v in values:
        node, sep, spec = v.partition("=")
        if not sep or not node.strip().isdigit() or not spec:
            raise click.BadParameter(f"expected NODE=TRACE, got {v!r}")
        out.append((int(node), spec))
    return tuple(out)


@click.command(help="""Predict how long a training step takes with Adam, KPOP and TopKPOP (or Eigen-Adam,
SOAP, RACS, Alice, Alice-0) on N nodes in a ring, and why: a discrete-event simulation driven by a
trace (docs/simulator.md).

The trace is --trace (a file, or a bundled profile name such as m4-mini-x16-tb4), else the newest
trace in ./traces, else the bundled profile of the KPOP paper's 16 × Mac mini cluster. Comma lists
in --nodes or --sparsity run a sweep and write a plot.

\b
Examples:
  asprof simulate --nodes 16 --sparsity 0.1
  asprof simulate --nodes 1,2,4,8,16 --optimizer adam,kpop
  asprof simulate --trace traces/mybox.json --model small --batch 8 --timeline tl.json
  asprof simulate --nodes 8 --slow 3.link=2      # node 3's link at half speed
  asprof simulate --trace m3-ultra-studio-x2-tb5 --backend ring,jaccl --nodes 2,4,8   # TCP ring vs RDMA mesh
  asprof simulate --nodes 16 --global-batch 16   # the KPOP paper's 16 x 1024 tokens per step
  asprof simulate --optimizer adam,racs,alice,soap --speedup alice=2.2,racs=1.5   # effective tokens/s""")
@click.option("--nodes", default="16", callback=comma_list(int, "integers"), show_default=True,
              help="Node count(s), e.g. 16 or 1,2,4,8,16.")
@run_options
@click.option("--trace", default=None, help="Trace file or bundled profile name.")
@click.option("--speedup", "speedups", multiple=True, callback=_pairs(float, "SPEEDUP"),
              help="OPTIMIZER=S: steps-to-target speed-up over Adam; adds effective tokens/s = tokens/s x S "
                   "(paper 004, F.5). Repeatable or comma-separated.")
@click.option("--loss-curve", "loss_curves", multiple=True, callback=_pairs(str, "RESULT.json"),
              help="OPTIMIZER=RESULT.json: an `asprof train` result; with adam's, the speed-up is computed from the "
                   "curves (steps to reach Adam's final loss). Repeatable.")
@click.option("--steps", default=100, type=int, show_default=True, help="Steps to simulate.")
@click.option("--seed", default=0, type=int, show_default=True, help="Seed for the sampled task times.")
@click.option("--no-variance", is_flag=True, help="Use median task times (no sampling).")
@backend_option(many=True)
@click.option("--link", default=None, help="Borrow link α/β from this trace or profile if the trace has no fit.")
@click.option("--slow", "slowdowns", multiple=True, callback=_slow,
              help="Slow node NODE by FACTOR (NODE=F or NODE.gpu|cpu|link=F); repeatable.")
@click.option("--node-trace", "node_traces", multiple=True, callback=_node_traces,
              help="Give node NODE its own trace (NODE=TRACE); repeatable.")
@click.option("--gemm-shapes/--square-gemms", default=None,
              help="Price each GEMM from the trace's shape grid (the default where the trace has one: `asprof "
                   "probe` measures it) or, with --square-gemms, from the square sweep at the same flop count "
                   "(docs/validate.md §6.3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--timeline", type=click.Path(dir_okay=False), default=None,
              help="Write a Chrome-trace JSON timeline (Perfetto) to this file.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Where to write the sweep plot [default: simulate_sweep.png for sweeps].")
@click.option("--no-plot", is_flag=True, help="Do not write the sweep plot.")
def command(nodes, choices, print_spec, trace, speedups, loss_curves, steps, seed, no_variance, backends, link, slowdowns,
            node_traces, gemm_shapes, as_json, timeline, plot, no_plot):
    from asprof.simulate.report import render_json, render_text
    from asprof.simulate.session import SimulateConfig, run_simulation

    cfg = SimulateConfig(nodes=nodes, run=choices, trace=trace, steps=steps, seed=seed, variance=not no_variance,
                         link=link, slowdowns=slowdowns, node_traces=node_traces, speedups=speedups,
                         loss_curves=loss_curves, gemm_shapes=gemm_shapes, backends=backends)
    if print_spec:
        for k in nodes:
            print_specs(choices.specs(k), k)
        return 0
    if timeline and cfg.is_sweep:
        raise AsprofError("--timeline needs one node count and one sparsity (not a sweep)")
    report = run_simulation(cfg, timeline=bool(timeline))
    plot_path = None
    if cfg.is_sweep and not no_plot:
        from asprof.simulate.plot import sweep_png

        plot_path = _write(plot or "simulate_sweep.png", sweep_png(report))
    if timeline:
        from asprof.simulate.timeline import render_timeline

        timeline = _write(timeline, render_timeline(report.predictions[0]))
    if as_json:
        click.echo(render_json(report), nl=False)
    else:
        click.echo(render_text(report, plot_path=plot_path, timeline_path=timeline), nl=False)


def _write(path: str, data) -> str:
    from pathlib import Path

    try:
        p = Path(path)
        if isinstance(data, str):
            p.write_text(data, encoding="utf-8")
        else:
            p.write_bytes(data)
    except OSError as e:
        raise AsprofError(f"{path}: cannot write ({e.strerror or e})") from None
    return str(path)
