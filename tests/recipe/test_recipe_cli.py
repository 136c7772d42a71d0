"""`hybridize recipes list` and `hybridize recipes show` through typer's CliRunner."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from hybridize.errors import RecipeError
from hybridize.recipe import list_builtin_recipes, load_recipe
from hybridize_cli.main import app

runner = CliRunner()


def test_list_shows_every_builtin_with_its_description():
    result = runner.invoke(app, ["recipes", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in list_builtin_recipes():
        assert name in result.output
        assert load_recipe(name).description in result.output


@pytest.mark.parametrize("name", list_builtin_recipes())
def test_show_prints_yaml_that_loads_back(name):
    result = runner.invoke(app, ["recipes", "show", name])
    assert result.exit_code == 0, result.output
    assert load_recipe(yaml.safe_load(result.output)) == load_recipe(name)


def test_show_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("targets:\n  - select: {name: 'layer4.*'}\n    encoder: {bits: 4}\n")
    result = runner.invoke(app, ["recipes", "show", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["name"] == "mine"
    assert shown["targets"] == [
        {"select": {"name": "layer4.*"}, "required": True, "encoder": {"bits": 4}}
    ]


def test_show_unknown_raises_the_one_line_recipe_error():
    result = runner.invoke(app, ["recipes", "show", "hs8"])
    assert result.exit_code != 0
    assert isinstance(result.exception, RecipeError)
    assert "did you mean 'has8'?" in str(result.exception)


def test_recipes_without_a_subcommand_prints_help():
    result = runner.invoke(app, ["recipes"])
    assert "list" in result.output and "show" in result.output


def test_console_script_prints_one_line_and_exits_2(monkeypatch, capsys):
    from hybridize_cli import main

    monkeypatch.setattr("sys.argv", ["hybridize", "recipes", "show", "nothing.yaml"])
    with pytest.raises(SystemExit) as info:
        main.run()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: recipe file 'nothing.yaml' not found;")
    assert "has8" in err
