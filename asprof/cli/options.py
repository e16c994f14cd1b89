"""The flags that describe a run, declared once for `asprof simulate`, `train` and `validate`:
the same names, meanings and defaults everywhere (the defaults are asprof/spec.py's). A command
decorated with :func:`run_options` receives one ``choices`` argument, an
:class:`asprof.spec.RunChoices`; ``--print-spec`` prints the run specs it resolves to and exits.
Old flag names keep working for one release, with a one-line deprecation notice (CHANGELOG.md)."""

from __future__ import annotations

import json

import click

from asprof import spec as S

SHARED = ("model", "vocab", "batch", "global_batch", "seq", "dtype", "optimizers", "sparsity", "lr", "frequency",
          "warmup", "alpha", "eig_method", "interval", "rank")


def comma_list(kind, name):
    """A click callback: 'a,b,c' -> a tuple of ``kind``."""
    def parse(ctx, param, value):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(kind(x.strip()) for x in value.split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list of {name}, got {value!r}") from None
    return parse


def _deprecated(new: str):
    """An old flag's callback: say once what replaces it, and pass the value on."""
    def note(ctx, param, value):
        if value is not None and value != param.default:
            click.echo(f"asprof: {param.opts[0]} is deprecated and will be removed in the next release; "
                       f"use {new}", err=True)
        return value
    return note


_MODEL_HELP = ("Model preset (tiny, small, kpop-1.7m, medium-35m, gpt2-125m) or a JSON model config. A preset "
               "keeps its own vocabulary in every command; training reads bytes, so its tokens use ids < 256 of "
               "that vocabulary (the head still costs the preset's). On a CPU-only machine start with tiny.")

_OPTIONS = [
    click.option("--model", default=S.MODEL, show_default=True, help=_MODEL_HELP),
    click.option("--vocab", type=int, default=None, help="Override the model's vocabulary (at least 256 to train)."),
    click.option("--batch", type=int, default=S.BATCH, show_default=True, help="Sequences per node per step."),
    click.option("--global-batch", type=int, default=None,
                 help="Sequences per step over the whole cluster, split evenly over the nodes; overrides --batch."),
    click.option("--seq", type=int, default=None, help="Sequence length [default: the model's]."),
    click.option("--dtype", type=click.Choice(S.DTYPES), default=S.DTYPE, show_default=True,
                 help="Activation/GEMM dtype (train runs float32)."),
    click.option("--optimizer", "optimizers", default=",".join(S.OPTIMIZER_LIST), show_default=True,
                 callback=comma_list(str, "names"), help=f"Comma-separated optimizers: {', '.join(S.OPTIMIZERS)}."),
    click.option("--sparsity", default=str(S.SPARSITY), show_default=True, callback=comma_list(float, "numbers"),
                 help="TopKPOP sparsity s ∈ (0, 1], or a comma list (one TopKPOP run per value)."),
    click.option("--lr", type=float, default=None,
                 help="Learning rate [default: Adam 1e-3, KPOP/TopKPOP 3e-3 (docs/optimizers.md's sweep); "
                      "Eigen-Adam/SOAP 3e-3, RACS/Alice/Alice-0 0.02 (the papers')]."),
    click.option("--frequency", "-f", type=int, default=S.FREQUENCY, show_default=True,
                 help="KPOP/TopKPOP: refresh the eigenbases every f steps after the warm-up."),
    click.option("--warmup", type=int, default=S.WARMUP, show_default=True,
                 help="KPOP/TopKPOP refresh every step while t < warmup; timings start after step warmup + 1."),
    click.option("--warmup-steps", "warmup_steps", type=int, default=None, hidden=True,
                 callback=_deprecated("--warmup")),
    click.option("--alpha", type=float, default=S.ALPHA, show_default=True, help="KPOP/TopKPOP factor EMA decay."),
    click.option("--eig-method", type=click.Choice(S.EIG_METHODS), default=S.EIG_METHOD, show_default=True,
                 help="KPOP/TopKPOP refresh: eigh, power (one QR power step after the first), subspace (partial: "
                      "block power steps + Rayleigh-Ritz, costs what it keeps) or auto (subspace where a basis keeps "
                      "fewer vectors than its factor, i.e. TopKPOP with s < 1; else eigh)."),
    click.option("--interval", type=int, default=None,
                 help="Eigen-Adam/SOAP/Alice: refresh the basis every K steps [default: 10, Alice 200 (the papers')]."),
    click.option("--rank", type=float, default=S.RANK, show_default=True,
                 help="Alice/Alice-0 rank: a fraction (<= 1) of each matrix's smaller side, or a count."),
    click.option("--print-spec", is_flag=True, help="Print the resolved run specs as JSON and exit."),
]


def run_options(f):
    """Add the shared run flags to a click command; it receives ``choices`` (RunChoices) and
    ``print_spec`` instead of the individual flags."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, **kw):
        given = {k: kw.pop(k) for k in SHARED}
        old_warmup = kw.pop("warmup_steps")
        if old_warmup is not None:
            given["warmup"] = old_warmup
        return f(*args, choices=S.RunChoices(**given), **kw)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def print_specs(specs, nodes: int) -> None:
    click.echo(json.dumps({"nodes": nodes, "specs": [s.to_dict() for s in specs]}, indent=1))
