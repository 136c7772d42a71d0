"""Resolution (built-in name, path, dict, Recipe), built-in recipes, YAML and file errors."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybridize.errors import RecipeError
from hybridize.recipe import (
    Recipe,
    builtin_recipe_path,
    builtin_recipe_text,
    list_builtin_recipes,
    load_recipe,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = ROOT / "recipes"
BUILTINS = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
REQUIRED_BUILTINS = {"has8", "has8-finetune", "has8-released", "last-stage", "replace-blocks"}


def test_builtins_are_the_yaml_files_of_recipes_dir():
    assert list_builtin_recipes() == BUILTINS
    assert set(BUILTINS) >= REQUIRED_BUILTINS


def test_builtin_yaml_is_package_data():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["hybridize.builtin_recipes"] == "recipes"
    patterns = config["package-data"]["hybridize.builtin_recipes"]
    for name in BUILTINS:
        assert any(fnmatch.fnmatch(name + ".yaml", pat) for pat in patterns)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_and_round_trips(name):
    r = load_recipe(name)
    assert r.name == name  # the file's name key matches its file name
    assert r.description
    assert load_recipe(r.to_dict()) == r
    assert load_recipe(json.loads(json.dumps(r.to_dict(), sort_keys=True))) == r
    assert load_recipe(yaml.safe_load(r.to_yaml())) == r
    # name, path and text resolve to the same recipe
    assert load_recipe(Path(str(builtin_recipe_path(name)))) == r
    assert yaml.safe_load(builtin_recipe_text(name))["name"] == name


def test_builtin_recipes_say_what_docs_say():
    has8, finetune, released = (load_recipe(n) for n in ("has8", "has8-finetune", "has8-released"))
    for r in (has8, finetune, released):
        assert [t.select.describe() for t in r.targets] == ["auto: stem", "auto: blocks"]
        assert [t.required for t in r.targets] == [False, True]
        for i in range(2):
            s = r.settings_for(i)
            assert (s.mode, s.pooling, s.residual) == ("parallel", "max-to-avg", "sew")
    s = has8.settings_for(1)
    assert (s.twin_init, s.gate, s.gate_init_value()) == ("fresh", "fixed", 1.0)
    assert s.encoder.kwargs() == {"gain": "unit"} and s.decoder.kwargs() == {}
    s = finetune.settings_for(1)
    assert (s.twin_init, s.gate, s.gate_init_value()) == ("copy", "learnable", 0.0)
    s = released.settings_for(1)
    assert s.encoder.kwargs() == {"compat": "has8-released"}
    assert s.decoder.kwargs() == {"compat": "has8-released"}
    assert s.encoder.effective()["order"] == "lsb"
    # released differs from has8 only in the encoder/decoder
    strip = ("name", "description")
    a, b = has8.to_dict(), released.to_dict()
    for key in strip:
        a.pop(key), b.pop(key)
    for d in (a, b):
        d["defaults"].pop("encoder"), d["defaults"].pop("decoder")
    assert a == b

    last = load_recipe("last-stage")
    assert [t.select.describe() for t in last.targets] == ["auto: last-stage"]
    s = last.settings_for(0)
    assert (s.mode, s.twin_init, s.gate, s.gate_init_value()) == (
        "parallel",
        "copy",
        "learnable",
        0.0,
    )

    replace = load_recipe("replace-blocks")
    assert [t.select.describe() for t in replace.targets] == ["auto: blocks"]
    s = replace.settings_for(0)
    assert (s.mode, s.twin_init) == ("replace", "copy")


def test_docs_describe_every_builtin():
    text = (ROOT / "docs" / "recipes.md").read_text()
    for name in BUILTINS:
        assert f"`{name}`" in text


def test_recipe_passes_through_unchanged():
    r = load_recipe("has8")
    assert load_recipe(r) is r


def test_path_str_and_pathlike(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("targets:\n  - select: {name: 'layer4.*'}\n    mode: skip\n")
    by_path = load_recipe(path)
    by_str = load_recipe(str(path))
    assert by_path == by_str
    assert by_path.name == "mine"  # a file without a name key is named after the file
    assert by_path.settings_for(0).mode == "skip"
    # a relative path without a slash that is not a built-in
    monkeypatch.chdir(tmp_path)
    assert load_recipe("mine.yaml") == by_path
    (tmp_path / "plain").write_text("name: plain\ntargets:\n  - select: {auto: head}\n")
    assert load_recipe("plain").name == "plain"


def test_builtin_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "has8").write_text("name: impostor\ntargets:\n  - select: {auto: head}\n")
    assert load_recipe("has8").name == "has8"


def test_dict_is_validated():
    r = load_recipe({"name": "d", "targets": [{"select": {"auto": "head"}}]})
    assert isinstance(r, Recipe) and r.name == "d"
    with pytest.raises(RecipeError, match=r"^recipe 'd': targets\[0\]\.select\.auto: 'heads'"):
        load_recipe({"name": "d", "targets": [{"select": {"auto": "heads"}}]})


def _builtin_list() -> str:
    return ", ".join(BUILTINS)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("hs8", "unknown recipe 'hs8'; did you mean 'has8'? built-in recipes: "),
        ("nothing-like-it", "unknown recipe 'nothing-like-it'; built-in recipes: "),
        ("missing.yaml", "recipe file 'missing.yaml' not found; "),
        ("dir/missing.yml", "recipe file 'dir/missing.yml' not found; "),
    ],
)
def test_unknown_name_and_missing_file_list_the_builtins(arg, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(arg)
    message = str(info.value)
    assert message.startswith(expected)
    assert _builtin_list() in message
    assert "\n" not in message


def test_directory_is_not_a_recipe(tmp_path):
    with pytest.raises(RecipeError, match="is a directory, not a file"):
        load_recipe(tmp_path)


def test_builtin_path_of_unknown_name():
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        builtin_recipe_path("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\ntargets:\n  - select: {auto: stem\n", "line 4, column 1: invalid YAML"),
        ("name: x\n  bad: indent\n", "line 2, column 6: invalid YAML"),
        (
            "name: x\ntargets:\n  - select: {auto: stem}\nname: y\n",
            "line 4, column 1: invalid YAML: duplicate key 'name'",
        ),
        ("", "the recipe is empty"),
        ("- select: {auto: stem}\n", "the top level must be a mapping"),
        ("!!python/object:os.system {}\n", "invalid YAML"),
        ("name: x\n? [a, b]\n: 1\n", "line 2, column 3: invalid YAML: a list cannot be a key"),
        ("name: x\n{a: 1}: y\n", "invalid YAML: a dict cannot be a key"),
    ],
)
def test_yaml_errors_name_file_and_line(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"recipe '{path}'")
    assert expected in message
    assert "\n" not in message


def test_validation_error_names_file_line_key_and_allowed_values(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(
        "name: my\n"
        "targets:\n"
        "  - select: {auto: stem}\n"
        "  - select: {name: 'layer4.*'}\n"
        "    encoder:\n"
        "      order: mbs\n"
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == (
        f"recipe '{path}' line 6: targets[1].encoder.order: 'mbs' is not allowed; "
        "choose one of: msb, lsb"
    )


def test_unknown_key_suggests_the_close_one_and_counts_the_rest(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "targets:\n  - select: {auto: stem}\n    encoder: {bitz: 4}\n    modee: replace\n"
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(
        f"recipe '{path}' line 3: targets[0].encoder.bitz: unknown key (did you mean 'bits'?); "
    )
    assert "allowed keys: bits, order, normalize, quantize, surrogate, alpha, offset," in message
    assert message.endswith("(and 1 more)")


def test_cross_field_error_points_at_the_target_line(tmp_path):
    path = tmp_path / "bits.yaml"
    path.write_text(
        "targets:\n"
        "  - select: {auto: stem}\n"
        "  - select: {auto: blocks}\n"
        "    encoder: {bits: 4}\n"
        "    decoder: {bits: 3}\n"
    )
    with pytest.raises(RecipeError, match=r"line 3: targets\[1\] .*decoder.bits: 3 does not match"):
        load_recipe(path)


def test_loading_a_recipe_does_not_import_torch():
    code = (
        "import sys\n"
        "from hybridize.recipe import load_recipe\n"
        "load_recipe('has8')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_yaml_merge_keys_are_recipe_yaml(tmp_path):
    """`<<: *base` (YAML's merge key) shares settings between targets; explicit keys beside it
    win, as in any YAML reader."""
    path = tmp_path / "merged.yaml"
    path.write_text(
        "name: merged\n"
        "targets:\n"
        "  - &base\n"
        "    select: {auto: stem}\n"
        "    required: false\n"
        "    encoder: {bits: 4}\n"
        "  - <<: *base\n"
        "    select: {auto: blocks}\n"
    )
    recipe = load_recipe(path)
    assert [t.select.auto for t in recipe.targets] == ["stem", "blocks"]
    assert recipe.targets[1].to_dict() == {
        **recipe.targets[0].to_dict(),
        "select": {"auto": "blocks"},
    }


def test_a_misspelt_key_is_reported_as_unknown_first(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: x\ntragets:\n  - select: {auto: blocks}\n")
    with pytest.raises(RecipeError, match=r"tragets: unknown key \(did you mean 'targets'\?\)"):
        load_recipe(path)


def test_exponent_numbers_are_numbers(tmp_path):
    """YAML 1.1 reads 1e-3 as a string ('must be a valid number (got '1e-3')'); recipes read it
    as YAML 1.2 does."""
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: x\ndefaults: {gate: learnable, gate_init: 1e-3}\ntargets:\n"
        "  - select: {auto: blocks}\n    gate_init: 2.5E+1\n"
    )
    recipe = load_recipe(path)
    assert recipe.defaults.gate_init == 1e-3 and recipe.targets[0].gate_init == 25.0
    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # PyYAML itself is left as it is
