"""The typer application: global options, error handling, and command registration.

Each command lives in its own module under ``commands/`` and calls only hybridize's public API.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

import typer
from rich.console import Console

import hybridize
from hybridize_cli import exits
from hybridize_cli.commands import convert, demo, evaluate, export, finetune, inspect, recipes

app = typer.Typer(
    name="hybridize",
    help="Turn pretrained image classifiers into hybrid ANN-SNN models.",
    epilog=exits.EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hybridize {hybridize.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Turn pretrained image classifiers into hybrid ANN-SNN models."""
    # --debug is read from argv by main_entry (it decides how failures end); declared here so
    # that it is accepted and listed by --help


# each command module exposes `register(app)`; this order is the order of `--help`
for _command in (recipes, convert, finetune, evaluate, demo, inspect, export):
    _command.register(app)


def main_entry(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    Every failure ends as one line on stderr: 2 for a user error (a bad option or a
    :class:`HybridizeError`, or a full disk, a read-only folder...), 130 when interrupted, 1 for
    an internal error. ``--debug`` re-raises user and internal errors with their traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        # make_context + invoke is click's main() without its handlers, which would turn
        # Ctrl-C into a silent exit code and swallow the code of typer.Exit
        with command.make_context("hybridize", args, obj={"argv": tuple(args)}) as ctx:
            command.invoke(ctx)
    except typer.Exit as exc:
        return exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an exit code
        if isinstance(exc, SystemExit):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `hybridize` alone: the help
            cast(Any, exc).show()
            return exits.USER
        code, line = exits.classify(exc)
        if debug and code != exits.INTERRUPTED:
            raise
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)
        return code
    return exits.OK


def run() -> None:
    """Console-script entry point (see :func:`main_entry` for the exit codes)."""
    sys.exit(main_entry())
