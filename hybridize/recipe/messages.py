"""One-line user messages for recipe mistakes: validation errors and targets that match nothing."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel, ValidationError

from hybridize.errors import RecipeError

if TYPE_CHECKING:
    from hybridize.recipe.schema import Recipe

_GLOB_CHARS = re.compile(r"[*?\[\]]")


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[Target]`` or ``Segment | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str | int], Any]:
    """The user-facing parts of ``loc`` and the model class at its end (None past a leaf).

    Pydantic adds union-member tags such as ``'list[str]'`` to locations; they are dropped.
    """
    parts: list[str | int] = []
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            parts.append(part)
        elif current is not None and part in current.model_fields:
            parts.append(part)
            current = _submodel(current.model_fields[part].annotation)
        elif current is not None:
            parts.append(part)  # an unknown key: report it, there is no model below it
            current = None
    return parts, current


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _describe(error: Any, root: type[BaseModel]) -> tuple[str, str]:
    """(display path, one-line message) for one pydantic error."""
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    parts, _ = _walk(root, loc)
    path = _path(parts)
    msg = str(error["msg"])
    if kind == "literal_error":
        allowed = ", ".join(_allowed(error.get("ctx", {}).get("expected", "")))
        text = f"{value!r} is not allowed; choose one of: {allowed}"
    elif kind == "extra_forbidden":
        _, parent = _walk(root, loc[:-1])
        keys = list(parent.model_fields) if parent is not None else []
        key = str(loc[-1])
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        text = f"unknown key{hint}; allowed keys: {', '.join(keys)}"
    elif kind == "missing":
        text = "required key is missing; add it"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        text = f"must be a mapping (got {value!r})"
    elif kind == "value_error":
        text = msg.removeprefix("Value error, ")
    else:
        text = f"{msg.replace('Input should be', 'must be').replace('should have', 'must have')} (got {value!r})"
    return path, text


def yaml_line(text: str, loc: Iterable[Any]) -> int | None:
    """The 1-based line of the deepest YAML node on the key path ``loc``, if it can be found."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return None if line is None else line + 1


def validation_message(
    error: ValidationError, source: str, root: type[BaseModel], text: str | None = None
) -> str:
    """Turn a pydantic ValidationError into ``recipe 'SRC' [line N]: PATH: problem (and N more)``."""
    seen: dict[str, str] = {}
    first_loc: tuple[Any, ...] = ()
    # an unknown key first: a misspelt required key also reads as "missing", and the
    # unknown-key message is the one that names the fix (did you mean ...)
    items = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for item in items:
        path, message = _describe(item, root)
        if path not in seen:
            if not seen:
                first_loc = tuple(item["loc"])
            seen[path] = message
    path, message = next(iter(seen.items()))
    if not first_loc:  # a whole-recipe check names its target in the message
        found = re.match(r"targets\[(\d+)\]", message)
        first_loc = ("targets", int(found.group(1))) if found else ()
    where = f"recipe {source!r}"
    line = yaml_line(text, first_loc) if text is not None and first_loc else None
    if line is not None:
        where += f" line {line}"
    more = f" (and {len(seen) - 1} more)" if len(seen) > 1 else ""
    return f"{where}: {path + ': ' if path else ''}{message}{more}"


def closest_names(query: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """Up to ``limit`` candidates most similar to ``query`` (glob characters ignored), sorted."""
    stem = _GLOB_CHARS.sub("", query)
    scored = []
    for name in set(candidates):
        ratio = difflib.SequenceMatcher(None, stem, name).ratio()
        if ratio >= 0.5:
            scored.append((-ratio, name))
    return sorted(name for _, name in sorted(scored)[:limit])


def unmatched_target_message(
    recipe: Recipe, target_index: int, candidates: Iterable[str], limit: int = 3
) -> str:
    """The one-line error for a required target that selected nothing in a model.

    ``candidates`` are the names the selector could have matched (module qualified names for
    ``name``, class names for ``type``, node names for ``segment``).
    """
    selector = recipe.targets[target_index].select
    candidates = list(candidates)
    queries = selector.patterns or (
        [selector.segment.start, selector.segment.end] if selector.segment is not None else []
    )
    close: list[str] = []
    for query in queries:
        close += [n for n in closest_names(query, candidates, limit) if n not in close]
    hint = f"; closest names: {', '.join(close[:limit])}" if close else ""
    return (
        f"recipe {recipe.name!r}: target {target_index} ({selector.describe()}) matched "
        f"nothing{hint}; fix the selector or set required: false on that target"
    )


def unmatched_target_error(
    recipe: Recipe, target_index: int, candidates: Iterable[str], limit: int = 3
) -> RecipeError:
    """A :class:`RecipeError` carrying :func:`unmatched_target_message` (for convert to raise)."""
    return RecipeError(unmatched_target_message(recipe, target_index, candidates, limit))
