"""`hybridize recipes list` and `hybridize recipes show NAME|PATH`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

import hybridize


def _list() -> None:
    """List the built-in recipes."""
    table = Table(title="built-in recipes")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    for name in hybridize.list_recipes():
        table.add_row(name, hybridize.load_recipe(name).description)
    Console().print(table)


def _show(
    recipe: str = typer.Argument(..., help="A built-in recipe name or the path of a YAML recipe."),
) -> None:
    """Print a recipe, validated, as YAML (all defaults written out)."""
    typer.echo(hybridize.load_recipe(recipe).to_yaml(), nl=False)


def register(app: typer.Typer) -> None:
    """Add the `recipes` command group to the application."""
    recipes_app = typer.Typer(
        name="recipes", help="List and show layer-selection recipes.", no_args_is_help=True
    )
    recipes_app.command("list")(_list)
    recipes_app.command("show")(_show)
    app.add_typer(recipes_app, name="recipes")
