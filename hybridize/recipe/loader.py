"""Resolving a recipe from a built-in name, a YAML file, a dict or a Recipe."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Hashable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from hybridize.errors import RecipeError
from hybridize.recipe.messages import validation_message
from hybridize.recipe.schema import Recipe

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; annotations only

_BUILTIN_PACKAGE = "hybridize.builtin_recipes"
_SUFFIX = ".yaml"

# Bounds on a recipe document: a recipe is a short file, and aliases must not multiply it
# (a "billion laughs" document is a few hundred bytes that expand to 10^9 nodes).
MAX_TEXT_CHARS = 1_000_000
MAX_NODES = 50_000  # nodes of the document with every alias expanded
MAX_DEPTH = 50
_MAX_MESSAGE = 500


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged, not a key
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # a list or mapping as a key
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} cannot be a key", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node


# YAML 1.1 (PyYAML) reads 1e-3 as a string; YAML 1.2 and every reader's intuition say float
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _TooLarge(yaml.YAMLError):
    """A document over the bounds above (raised before anything is constructed)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a node graph whose alias-expanded tree is too large, too deep, or cyclic.

    Aliases make the composed graph a DAG whose expansion can be exponential; sizes are summed
    bottom-up once per node (linear in the graph), never by expanding.
    """
    if root is None:
        return
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise _TooLarge(
                    f"the document expands to more than {MAX_NODES} values (aliases counted "
                    "at every use)"
                )
            if depth[key] > MAX_DEPTH:
                raise _TooLarge(f"the document nests deeper than {MAX_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in depth:  # started and not finished: an ancestor of itself
            raise _TooLarge("an alias refers to a node that contains it (a recursive document)")
        depth[key] = -1
        stack.append((node, True))
        stack.extend((c, False) for c in children)


def _one_line(message: str) -> str:
    """``message`` on one line and at most a few hundred characters (head and tail kept)."""
    text = " ".join(message.split())
    if len(text) <= _MAX_MESSAGE:
        return text
    return f"{text[: _MAX_MESSAGE - 160]} ... {text[-150:]}"


def _builtin_dir() -> Traversable:
    return resources.files(_BUILTIN_PACKAGE)


def list_builtin_recipes() -> list[str]:
    """Names of the built-in recipes, sorted."""
    return sorted(
        entry.name.removesuffix(_SUFFIX)
        for entry in _builtin_dir().iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )


def _unknown_builtin(name: str) -> RecipeError:
    names = list_builtin_recipes()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return RecipeError(
        f"unknown recipe {name!r}; {hint}built-in recipes: {', '.join(names)}; "
        "or pass the path of a YAML recipe file"
    )


def builtin_recipe_path(name: str) -> Traversable:
    """The resource of built-in recipe ``name`` (a real path in editable and wheel installs)."""
    if name not in list_builtin_recipes():
        raise _unknown_builtin(name)
    return _builtin_dir().joinpath(name + _SUFFIX)


def builtin_recipe_text(name: str) -> str:
    """The YAML text of built-in recipe ``name``, comments included."""
    return builtin_recipe_path(name).read_text(encoding="utf-8")


def _parse_yaml(text: str, source: str) -> Any:
    if len(text) > MAX_TEXT_CHARS:
        raise RecipeError(
            f"recipe {source!r} has {len(text)} characters, more than {MAX_TEXT_CHARS}; a recipe "
            "is a short YAML file"
        )
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooLarge as exc:
        raise RecipeError(f"recipe {source!r}: {exc}; write the recipe out plainly") from None
    except RecursionError:
        raise RecipeError(
            f"recipe {source!r}: the document nests too deeply; a recipe is a few levels deep"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise RecipeError(
            _one_line(f"recipe {source!r}{where}: invalid YAML: {problem}; fix the YAML there")
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(
            _one_line(f"recipe {source!r}: YAML error: {exc}; fix the file")
        ) from None


def parse_recipe(data: Any, source: str, text: str | None = None) -> Recipe:
    """Validate parsed data as a Recipe; errors become one-line :class:`RecipeError`.

    ``source`` names the recipe in messages; ``text`` (the YAML) adds line numbers.
    """
    if data is None:
        raise RecipeError(f"recipe {source!r}: the recipe is empty; it needs at least 'targets'")
    if not isinstance(data, dict):
        raise RecipeError(
            f"recipe {source!r}: the top level must be a mapping with keys name, description, "
            f"defaults, trace, targets (got {type(data).__name__})"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_one_line(validation_message(exc, source, Recipe, text))) from None
    except RecursionError:
        raise RecipeError(
            f"recipe {source!r}: the data nests too deeply; a recipe is a few levels deep"
        ) from None


def _load_text(text: str, source: str, default_name: str) -> Recipe:
    data = _parse_yaml(text, source)
    if isinstance(data, dict) and "name" not in data:
        data = {"name": default_name, **data}
    return parse_recipe(data, source, text)


def _load_file(path: Path) -> Recipe:
    source = str(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise RecipeError(
            f"recipe file {source!r} {what}; pass an existing YAML file or one of the built-in "
            f"recipes: {', '.join(list_builtin_recipes())}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(
            f"recipe file {source!r} cannot be read ({exc}); check the file"
        ) from None
    return _load_text(text, source, path.stem)


def _looks_like_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or "/" in value or os.sep in value


def load_recipe(obj: str | os.PathLike[str] | dict[str, Any] | Recipe) -> Recipe:
    """Resolve a recipe.

    A Recipe passes through; a dict is validated; a str naming a built-in resolves to it;
    any other str or path is read as a YAML file. Errors are one-line :class:`RecipeError`.
    """
    if isinstance(obj, Recipe):
        return obj
    if isinstance(obj, dict):
        return parse_recipe(obj, str(obj.get("name", "custom")))
    if isinstance(obj, str) and obj in list_builtin_recipes():
        return _load_text(builtin_recipe_text(obj), obj, obj)
    if isinstance(obj, os.PathLike) or (isinstance(obj, str) and _looks_like_path(obj)):
        return _load_file(Path(obj))
    if isinstance(obj, str):
        if Path(obj).is_file():
            return _load_file(Path(obj))
        raise _unknown_builtin(obj)
    raise TypeError(
        f"load_recipe expects a built-in name, a path, a dict or a Recipe, not {type(obj).__name__}"
    )
