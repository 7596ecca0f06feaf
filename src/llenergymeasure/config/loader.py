"""Reading YAML files and turning every kind of bad input into one clear ConfigError.

A message always names the file, the key path (with its line where the YAML has it) and what was
expected; a user never sees a traceback for a typo.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llenergymeasure.errors import ConfigError

PathPart = str | int


@dataclass(frozen=True)
class YamlDocument:
    """Parsed YAML plus what is needed to point at a key in it."""

    path: Path
    data: Any
    node: yaml.Node | None

    def line_of(self, key_path: Sequence[PathPart]) -> int | None:
        """1-based line of the deepest node found along key_path, or None. A mapping entry's
        line is its key's: a block value (`grid:` then indented lines) starts a line later."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for part in key_path:
            at: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                pair = next(
                    ((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)),
                    None,
                )
                at, node = pair if pair is not None else (None, None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if 0 <= part < len(node.value) else None
                at = node
            else:
                node = None
            if node is None or at is None:
                break
            line = at.start_mark.line + 1
        return line

    def where(self, key_path: Sequence[PathPart]) -> str:
        """'file.yaml, line 7, at grid.batch_size[1]' for messages."""
        line = self.line_of(key_path)
        at = f"line {line}, " if line is not None else ""
        return f"{self.path}, {at}at {format_path(key_path) or '<top level>'}"


def format_path(parts: Iterable[PathPart]) -> str:
    """('grid', 'batch_size', 1) -> 'grid.batch_size[1]'."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(path: Path, *, what: str = "file") -> YamlDocument:
    """Read a YAML mapping, translating missing files and syntax errors into ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{what} not found: {path}") from e
    except IsADirectoryError as e:
        raise ConfigError(f"{what} {path} is a directory; expected a YAML file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: YAML syntax error: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {e}") from e
    if node is not None:
        _reject_duplicate_keys(node, path)
    if data is None:
        raise ConfigError(f"{path} is empty; expected a YAML mapping of settings")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping (key: value lines) at the top level, "
            f"got {type(data).__name__}"
        )
    return YamlDocument(path=path, data=data, node=node)


def _reject_duplicate_keys(root: yaml.Node, path: Path) -> None:
    """YAML keeps the last of two equal keys; a dropped grid dimension must not pass silently."""
    stack: list[tuple[yaml.Node, tuple[PathPart, ...]]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, at = stack.pop()
        if id(node) in seen:  # aliases share nodes
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key, value in node.value:
                name = str(getattr(key, "value", ""))
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                    stack.append((value, at))
                    continue
                line = key.start_mark.line + 1
                if name in first_line:
                    raise ConfigError(
                        f"{path}, line {line}, at {format_path((*at, name))}: duplicate key "
                        f"'{name}' (first set on line {first_line[name]}); keep only one"
                    )
                first_line[name] = line
                stack.append((value, (*at, name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*at, i)) for i, item in enumerate(node.value))


Locator = Callable[[tuple[PathPart, ...]], Sequence[PathPart]]
"""Maps a key path inside the validated model to the key path in the YAML file that set it."""


def explain_validation_error(
    error: ValidationError,
    model: type[BaseModel],
    doc: YamlDocument,
    locate: Locator = lambda loc: loc,
    context: str = "",
    limit: int = 8,
) -> ConfigError:
    """One ConfigError listing each problem as 'file, line, at key.path: what was expected'."""
    problems: list[str] = []
    for err in error.errors(include_url=False)[:limit]:
        model_loc = tuple(_clean_loc(err["loc"]))
        problems.append(f"{doc.where(locate(model_loc))}: {_expected(err, model, model_loc)}")
    hidden = error.error_count() - len(problems)
    if hidden > 0:
        problems.append(f"... and {hidden} more")
    head = f"invalid configuration{(' ' + context) if context else ''}"
    return ConfigError(head + ":\n  " + "\n  ".join(problems))


def _clean_loc(loc: tuple[int | str, ...]) -> list[PathPart]:
    # pydantic puts union member / validator names in loc; keep only real keys and indices.
    return [part for part in loc if isinstance(part, int) or not _is_internal(part)]


def _is_internal(part: str) -> bool:
    return part.startswith(("function-", "tagged-union[", "union[")) or part in {
        "str",
        "int",
        "float",
        "bool",
        "list",
        "dict",
        "none",
    }


def _expected(err: Any, model: type[BaseModel], loc: tuple[PathPart, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _fields_at(model, loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        allowed = f" (known keys here: {', '.join(sorted(known))})" if known else ""
        return f"unknown key '{key}'{suggestion}{allowed}"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in {"value_error", "assertion_error"}:
        return f"{msg} (got {err['input']!r})"
    return msg


def _fields_at(model: type[BaseModel], loc: Sequence[PathPart]) -> list[str]:
    """Field names of the nested model at loc, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
