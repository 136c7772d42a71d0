"""`hybridize convert MODEL --recipe NAME|PATH [-o OUT.safetensors] [--dry-run]`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import hybridize
from hybridize_cli.checks import output_file


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 10_000 else str(n)


def render_plan(plan, console: Console) -> None:
    """Print a Plan as a rich table plus a summary."""
    table = Table(title=f"conversion plan (recipe {plan.recipe})")
    for col in ("region", "selected by", "mode", "status", "ANN params", "twin params", "T", "LIF"):
        table.add_column(col, no_wrap=col in ("region", "mode", "T"))
    for row in plan.rows:
        region = row.region
        selected = f"target {region.target_index} ({region.selector})"
        if region.overrides:
            selected += f"; overrides target {', '.join(map(str, region.overrides))}"
        status = row.status if not row.reason else f"{row.status}: {row.reason}"
        if row.twin_report.note:
            status += f" [{row.twin_report.note}]"
        converted = row.status == "converted"
        table.add_row(
            region.name,
            selected,
            region.settings.mode,
            status,
            _millions(row.ann_params),
            _millions(row.twin_params) if converted else "-",
            str(region.settings.time_steps) if converted else "-",
            str(len(row.twin_report.activations)) if converted else "-",
        )
    console.print(table)
    n = len(plan.converted)
    console.print(
        f"{n} of {len(plan.rows)} regions converted; parameters "
        f"{_millions(plan.params_before)} -> {_millions(plan.params_after)} "
        f"(x{plan.params_after / max(plan.params_before, 1):.2f})"
    )
    if plan.unconverted:
        shown = ", ".join(f"{w} ({why})" for w, why in plan.unconverted[:8])
        more = f" and {len(plan.unconverted) - 8} more" if len(plan.unconverted) > 8 else ""
        console.print(f"activations left as ANN: {shown}{more}")


def convert(
    model: str = typer.Argument(
        ..., help="timm name, torchvision:NAME, module:callable, or a HAS-8 reference name."
    ),
    recipe: str = typer.Option("has8", "--recipe", "-r", help="Built-in recipe name or YAML path."),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local .safetensors/.pth state_dict of the base model."
    ),
    pretrained: bool = typer.Option(
        True,
        "--pretrained/--no-pretrained",
        help="Load pretrained weights (offline resolvers, then the hub).",
    ),
    num_classes: int | None = typer.Option(None, "--num-classes", min=0, help="Replace the head."),
    in_chans: int | None = typer.Option(
        None, "--in-chans", min=1, help="Input channels (adapts the stem)."
    ),
    img_size: int | None = typer.Option(
        None, "--img-size", min=1, help="Example input size for shapes."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the hybrid checkpoint here."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan; change and write nothing."
    ),
    trust_code: bool = typer.Option(
        False, "--trust-code", help="Let the recipe's trace paths import modules."
    ),
) -> None:
    """Give the layers a recipe selects a spiking twin, and save the hybrid."""
    console = Console()
    recipe_file = Path(recipe) if Path(recipe).suffix in (".yaml", ".yml") else None
    from hybridize.io import refuse_same_file  # torch: not at startup (--help)

    refuse_same_file(output, weights, recipe_file)
    output_file(output, "--output")
    hybridize.load_recipe(recipe)  # a bad recipe is reported before the model is built
    base = hybridize.create_model(
        model,
        pretrained=pretrained and weights is None,
        weights=weights,
        num_classes=num_classes,
        in_chans=in_chans,
        hybrid=False,  # the recipe makes the hybrid, also for HAS-8 names
    )
    source = (getattr(base, "hybridize_spec", None) or {}).get("weights_source", "unknown")
    console.print(f"model {model}: weights from {source}")
    example = hybridize.default_example(base, img_size)
    if dry_run:
        with hybridize.trusting_code(trust_code):
            plan = hybridize.plan(base, recipe, example_input=example)
        render_plan(plan, console)
        console.print("dry run: nothing written")
        return
    with hybridize.trusting_code(trust_code):
        hybrid = hybridize.convert(base, recipe, example_input=example)
    render_plan(hybrid.conversion_plan, console)
    if output is None:
        console.print("no --output given: the hybrid was built and checked, nothing written")
        return
    hybridize.save(hybrid, output)
    console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add the `convert` command."""
    app.command("convert")(convert)
