"""Reading YAML files and turning every kind of bad input into one clear ConfigError.

A message always names the file, the key path (with its line where the YAML has it) and what was
expected; a user never sees a traceback for a typo. Hostile files get the same treatment: a file
that is not a regular file, too large, nested too deeply, expands to too many values through
YAML aliases, or holds characters no path or terminal can take is refused before anything else
reads it, and values and keys are shown escaped and cut short.
"""

from __future__ import annotations

import difflib
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llenergymeasure.config.capabilities import UNSUPPORTED_VALUE
from llenergymeasure.errors import ConfigError, printable

PathPart = str | int

MAX_FILE_BYTES = 4 * 2**20
"""Far above any real campaign; stops a mistyped path to a data file or a device."""
MAX_PROMPT_FILE_BYTES = 256 * 2**20
"""A JSONL prompt file: a million prompts of 250 bytes; stops /dev/zero and its kin."""
MAX_DEPTH = 32
"""Nesting levels; the deepest real setting (base.measurement.baseline.ttl_s) is 4."""
MAX_VALUES = 1_000_000
"""Keys, items and scalars, counted with YAML aliases expanded (a "billion laughs" file)."""
TOO_MANY = (
    f"more than {MAX_VALUES:,} values once YAML aliases are expanded; a campaign this size "
    "is a mistake (or a hostile file)"
)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where present: a 4 MB file in seconds, not minutes (issue 27.7)."""
SHOWN_CHARS = 80
"""Longest key or value echoed in a message."""


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
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = printable(str(part), SHOWN_CHARS)
            out += f".{shown}" if out else shown
    return out


def read_yaml(path: Path, *, what: str = "file") -> YamlDocument:
    """Read a YAML mapping, translating missing files and syntax errors into ConfigError."""
    text = _read_text(path, what)
    loader = SAFE_LOADER(text)
    try:  # parsed once; refused on its node count before the (pure Python) construction
        if len(text) > 2 * MAX_VALUES:  # room for too many values: count libyaml's events
            _count_events(SAFE_LOADER(text), path)  # first (seconds; composing: minutes)
        node = loader.get_single_node()
        if node is not None:
            _reject_duplicate_keys(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = printable(str(e.problem or e), 2 * SHOWN_CHARS)
        raise ConfigError(f"{path}{at}: YAML syntax error: {problem}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {printable(str(e), 2 * SHOWN_CHARS)}") from e
    except RecursionError as e:  # PyYAML composes nested collections recursively
        raise ConfigError(
            f"{path}: nested too deeply to read (a setting is at most {MAX_DEPTH} levels deep)"
        ) from e
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(f"{path} is empty; expected a YAML mapping of settings")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping (key: value lines) at the top level, "
            f"got {type(data).__name__}"
        )
    doc = YamlDocument(path=path, data=data, node=node)
    _check_values(doc)
    return doc


def _count_events(loader: Any, path: Path) -> None:
    nodes = (yaml.ScalarEvent, yaml.CollectionStartEvent)
    count = 0
    try:
        while (event := loader.get_event()) is not None:
            count += isinstance(event, nodes)
            if count > MAX_VALUES:
                raise ConfigError(f"{path}: {TOO_MANY}")
    finally:
        loader.dispose()


def check_regular_file(
    path: Path, what: str, max_bytes: int = MAX_FILE_BYTES, kind: str = "a YAML file"
) -> None:
    """Refuse, before reading, what no input file is: a directory, a device such as /dev/zero
    (unbounded), a FIFO (blocks forever), a file over max_bytes (issue 27.6)."""
    try:
        info = path.stat()
    except FileNotFoundError as e:
        raise ConfigError(f"{what} not found: {path}") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read {what} {path}: {printable(str(e))}") from e
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is a directory; expected {kind}")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file; expected {kind}")
    if info.st_size > max_bytes:
        raise ConfigError(
            f"{what} {path} is {info.st_size:,} bytes; {kind} here is at most "
            f"{max_bytes:,} bytes (is it the right file?)"
        )


def _read_text(path: Path, what: str) -> str:
    check_regular_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from e
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read {what} {path}: {printable(str(e))}") from e


def _check_values(doc: YamlDocument) -> None:
    """Refuse what no setting can be, before validation walks it: nesting deeper than
    MAX_DEPTH, more than MAX_VALUES values once aliases are expanded, and text with a NUL
    (no path can hold one) or a lone surrogate (no file or terminal can encode one)."""
    stack: list[tuple[Any, tuple[PathPart, ...]]] = [(doc.data, ())]
    count = 0
    while stack:
        value, at = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{doc.path}: {TOO_MANY}")
        if len(at) > MAX_DEPTH:
            raise ConfigError(
                f"{doc.where(at[:MAX_DEPTH])}: nested more than {MAX_DEPTH} levels deep; "
                "no setting is"
            )
        if isinstance(value, str):
            _check_text(doc, at, value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    _check_text(doc, at, key)
                stack.append((item, (*at, key if isinstance(key, (str, int)) else str(key))))
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend((item, (*at, i)) for i, item in enumerate(value))


def _check_text(doc: YamlDocument, at: tuple[PathPart, ...], text: str) -> None:
    if "\x00" in text:
        raise ConfigError(f"{doc.where(at)}: contains a NUL character (\\x00); remove it")
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise ConfigError(
            f"{doc.where(at)}: contains a lone surrogate (an escape such as \\ud800 that is "
            "not a character); remove it"
        )


def _reject_duplicate_keys(root: yaml.Node, path: Path) -> None:
    """YAML keeps the last of two equal keys; a dropped grid dimension must not pass silently.
    More than MAX_VALUES nodes (aliases not yet expanded) is refused here, before construction."""
    stack: list[tuple[yaml.Node, tuple[PathPart, ...]]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, at = stack.pop()
        if id(node) in seen:  # aliases share nodes
            continue
        seen.add(id(node))
        if len(seen) > MAX_VALUES:
            raise ConfigError(f"{path}: {TOO_MANY}")
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
    secret: tuple[str, ...] = (),
) -> ConfigError:
    """One ConfigError listing each problem as 'file, line, at key.path: what was expected'.
    The values under the top-level keys in `secret` are never shown."""
    problems: list[str] = []
    for err in error.errors(include_url=False)[:limit]:
        loc = err["loc"]
        if err["type"] == "extra_forbidden":  # the last part is the user's own key, whatever
            model_loc = (*_clean_loc(loc[:-1]), loc[-1])  # it is called ('str', 'function-')
        else:
            model_loc = tuple(_clean_loc(loc))
        secret_here = model_loc[:1] in [(s,) for s in secret]
        shown = {k: v for k, v in err.items() if k != "input"} if secret_here else err
        problems.append(f"{doc.where(locate(model_loc))}: {_expected(shown, model, model_loc)}")
    hidden = error.error_count() - len(problems)
    if hidden > 0:
        problems.append(f"... and {hidden} more")
    head = f"invalid configuration{(' ' + context) if context else ''}"
    return ConfigError(head + ":\n  " + "\n  ".join(problems))


def _clean_loc(loc: tuple[int | str, ...]) -> list[PathPart]:
    # pydantic puts union member / validator names in loc; keep only real keys and indices.
    return [part for part in loc if isinstance(part, int) or not _is_internal(str(part))]


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
        key = printable(str(loc[-1]), SHOWN_CHARS)
        known = _fields_at(model, loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        allowed = f" (known keys here: {', '.join(sorted(known))})" if known else ""
        return f"unknown key '{key}'{suggestion}{allowed}"
    if kind == "missing":
        return "required key is missing"
    msg = printable(str(err["msg"]).removeprefix("Value error, "), 4 * SHOWN_CHARS)
    if "input" in err and kind not in {"value_error", "assertion_error", UNSUPPORTED_VALUE}:
        return f"{msg} (got {printable(repr(err['input']), SHOWN_CHARS)})"
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
