"""The `asprof` command line: one click group, one module per subcommand.

Commands only wire flags to a config object, call one function and render the result;
the logic lives in the packages (DESIGN §1). Errors a user can cause are printed as one
line (``asprof <cmd>: error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from asprof import __version__
from asprof.errors import AsprofError

# name -> module under asprof.cli that defines `command`. Imported lazily so `--help` is fast
# and a command's heavy imports (mlx, torch, matplotlib) only load when it runs.
COMMANDS = {
    "probe": "probe",
    "show": "show",
    "plot": "plot",
    "simulate": "simulate",
    "train": "train",
    "validate": "validate",
}

SHORT_HELP = {
    "probe": "Measure this machine (or a cluster) and write a versioned trace.",
    "show": "Print a readable summary of a trace.",
    "plot": "Write PNG plots of a trace.",
    "simulate": "Predict step time, communication and memory on N nodes from a trace.",
    "train": "Train the small LLaMA with Adam, KPOP or TopKPOP (single or distributed).",
    "validate": "Run real training on a cluster and compare it with the simulator's prediction.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx, name):
        if name not in COMMANDS or not _available(name):
            return None
        module = importlib.import_module(f"asprof.cli.{COMMANDS[name]}")
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"asprof.cli.{COMMANDS[name]}") is not None


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="asprof")
def cli():
    """asprof: how fast will training with optimizer X run on N Macs joined by Thunderbolt, and why?

    \b
    1. `asprof probe` measures this machine (BLAS, launch latency, memory bandwidth,
       eigendecomposition, memory growth, all-reduce across a cluster) into a trace file.
    2. `asprof simulate` predicts step time, its breakdown, bytes sent and memory for
       Adam, KPOP and TopKPOP at any node count and sparsity, driven by a trace
       (or a bundled reference profile when you have none).
    3. `asprof validate` trains for real on a cluster and prints predicted vs measured.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and an exit code."""
    prog = "asprof"
    args = sys.argv[1:] if argv is None else argv
    sub = next((a for a in args if not a.startswith("-")), None)
    where = f"{prog} {sub}" if sub in COMMANDS else prog
    try:
        rv = cli.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo(f"{where}: interrupted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"{where}: error: {_one_line(e.format_message())} (see `{where} --help`)", err=True)
        return e.exit_code
    except AsprofError as e:
        click.echo(f"{where}: error: {_one_line(str(e))}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo(f"{where}: interrupted", err=True)
        return 130
    # A command may return an exit code (e.g. `validate` when an error exceeds --tolerance).
    return rv if isinstance(rv, int) else 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run() -> None:
    sys.exit(main())
