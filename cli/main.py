"""The typer application: global options, error handling, and command registration.

Each command lives in its own module under ``commands/`` and calls only hybridize's public API.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer
from rich.console import Console

import hybridize
from hybridize.errors import HybridizeError

app = typer.Typer(
    name="hybridize",
    help="Turn pretrained image classifiers into hybrid ANN-SNN models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# command modules, each exposing `register(app)`; order is the order of `--help`
COMMAND_MODULES = (
    "hybridize_cli.commands.recipes",
    "hybridize_cli.commands.convert",
    "hybridize_cli.commands.finetune",
    "hybridize_cli.commands.evaluate",
    "hybridize_cli.commands.demo",
    "hybridize_cli.commands.inspect",
    "hybridize_cli.commands.export",
)

_state = {"debug": False}


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
    _state["debug"] = debug


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not written yet
                continue
            raise
        module.register(app)


_register_commands()


def run() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    debug = "--debug" in sys.argv[1:]
    try:
        app(standalone_mode=False)
    except HybridizeError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
