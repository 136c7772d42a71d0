"""The recipe loader on hostile YAML: one short line or a Recipe, in bounded time and memory,
nothing imported, nothing written (issue 14, items 6 and the fuzz test)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridize.conversion.trace import make_tracer, opaque_classes
from hybridize.errors import HybridizeError, RecipeError
from hybridize.recipe import Recipe, load_recipe

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
MAX_MESSAGE = 600
# a module that does not exist: resolving it would need an import
SENTINEL = "hybridize_fuzz_sentinel_module"


def bomb(levels: int, fanout: int = 9, where: str = "name") -> str:
    """A "billion laughs" recipe: ``fanout ** levels`` strings from a few hundred bytes."""
    lines = ["a0: &a0 " + repr(["lol"] * fanout).replace("'", '"')]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + f"\ntargets:\n  - select: {{{where}: *a{levels}}}\n"


def _load_text(text: str) -> tuple[Recipe | None, str | None]:
    """load_recipe on ``text`` written to a fresh folder: (recipe, None) or (None, message).

    Asserts the one-line contract and that the folder holds only the recipe afterwards.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_recipe(path), None
        except RecipeError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg and len(msg) <= MAX_MESSAGE, msg[:2000]
            return None, msg
        finally:
            assert [p.name for p in Path(tmp).iterdir()] == ["r.yaml"]


@pytest.mark.parametrize("where", ["name", "type"])
def test_alias_bomb_is_refused_at_once(where) -> None:
    tracemalloc.start()
    try:
        recipe, msg = _load_text(bomb(6, where=where))  # 531,441 strings once expanded
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert recipe is None and "expands to more than" in msg
    assert peak < 32 * 2**20  # the expansion was never built


def test_nine_level_bomb_through_the_cli(tmp_path) -> None:
    """The issue's case: 9 levels ran past 300 s; now exit 2 with one short line."""
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(9))
    result = subprocess.run(
        [sys.executable, "-m", "hybridize_cli", "recipes", "show", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "expands to more than" in lines[0] and len(lines[0]) < 300
    assert result.stdout == ""


@pytest.mark.parametrize(
    "text, expect",
    [
        ("a: &a [*a]\ntargets: [{select: {auto: stem}}]\n", "recursive"),
        ("targets: " + "[" * 60 + "]" * 60 + "\n", "deeper than"),
        ("targets: " + "[" * 3000 + "]" * 3000 + "\n", "nests too deeply"),
        ("description: " + "x" * 1_000_001 + "\n", "more than 1000000"),
    ],
)
def test_recursive_deep_and_huge_documents(text, expect) -> None:
    recipe, msg = _load_text(text)
    assert recipe is None and expect in msg


def test_small_aliases_still_work() -> None:
    text = (
        "defaults: {mode: parallel, encoder: &enc {bits: 4}}\n"
        "targets:\n"
        "  - {select: {auto: stem}, mode: replace}\n"
        "  - select: {name: &names [layer1.*, layer2.*]}\n"
        "    encoder: *enc\n"
        "  - {select: {name: *names}, encoder: *enc}\n"
    )
    recipe, msg = _load_text(text)
    assert msg is None and recipe.defaults.encoder.bits == 4
    assert recipe.targets[2].select.patterns == ["layer1.*", "layer2.*"]


def test_huge_value_message_stays_short() -> None:
    recipe, msg = _load_text("targets: [{select: {auto: " + "x" * 50_000 + "}}]\n")
    assert recipe is None and "auto" in msg


# ---- hypothesis -----------------------------------------------------------------------------

KEYS = [
    "name", "description", "defaults", "trace", "targets", "select", "auto", "type", "segment",
    "start", "end", "mode", "encoder", "decoder", "neuron", "bits", "compat", "gate",
    "leaf_modules", "autowrap_functions", "required", "<<",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["stem", "blocks", "has8-released", "layer1.*", f"{SENTINEL}.fn", "torch.roll"]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=40,
)


def _no_import_happens(recipe: Recipe) -> None:
    """Resolving the trace section imports nothing new (untrusted is the default)."""
    for resolve in (make_tracer, opaque_classes):
        try:
            resolve(recipe.trace)
        except HybridizeError as exc:
            assert "\n" not in str(exc)
    assert SENTINEL not in sys.modules


@FUZZ
@given(VALUES)
def test_random_documents(value) -> None:
    text = yaml.safe_dump({"targets": value} if not isinstance(value, dict) else value)
    recipe, _ = _load_text(text)
    if recipe is not None:
        _no_import_happens(recipe)
    recipe, _ = _load_text(text[: len(text) // 2])  # cut anywhere: still one line
    try:
        load_recipe(value if isinstance(value, dict) else {"targets": value})
    except RecipeError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= MAX_MESSAGE


@FUZZ
@given(
    levels=st.integers(1, 12),
    fanout=st.integers(1, 12),
    where=st.sampled_from(["name", "type", "description", "targets", "defaults", "merge"]),
)
def test_alias_heavy_documents(levels, fanout, where) -> None:
    lines = [f"a0: &a0 [{', '.join(['layer1.*'] * fanout)}]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    top = f"*a{levels}"
    body = {
        "name": f"targets: [{{select: {{name: {top}}}}}]",
        "type": f"targets: [{{select: {{type: {top}}}}}]",
        "description": f"description: {top}\ntargets: [{{select: {{auto: stem}}}}]",
        "targets": f"targets: {top}",
        "defaults": f"defaults: {{encoder: {top}}}\ntargets: [{{select: {{auto: stem}}}}]",
        "merge": f"m: &m {{x: {top}}}\ntargets: [{{select: {{auto: stem}}, <<: *m}}]",
    }[where]
    tracemalloc.start()
    try:
        recipe, msg = _load_text("\n".join(lines) + "\n" + body + "\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
    if fanout**levels * (levels + 1) > 50_000 * 2:  # far past the bound: refused as such
        assert recipe is None and "expands to more than" in msg
