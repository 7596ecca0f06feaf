"""Hostile input, property-based: random and mutated campaign and settings files (wrong types,
huge grids, unicode, deep nesting, aliases, path traversal in names and output dirs, negative
and zero sizes, garbage bytes) never crash the loader or the CLI.

Each case either loads, with every name it will write under sanitised, or raises a ConfigError
whose message names the file and is printable and short; through the CLI the exit code is 0 or
2 with no traceback; and nothing is ever written outside the output directory. The examples
are derandomized (the same cases on every run, so CI is reproducible); together the tests
below run more than 2,000 cases. The loader is called in-process; a few hostile files also go
through the real `lem` in a subprocess (test_errors.py style).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llenergymeasure.cli import cli
from llenergymeasure.config.campaign import CAMPAIGN_NAME_PATTERN
from llenergymeasure.config.grid import (
    HARD_MAX_EXPERIMENTS,
    TooManyExperimentsError,
    count_experiments,
    load_campaign,
)
from llenergymeasure.config.settings import SETTINGS_FILE, load_settings
from llenergymeasure.config.settings import UserSettings as Settings
from llenergymeasure.errors import ConfigError
from llenergymeasure.orchestrator.layout import create_campaign

ID_PATTERN = re.compile(r"(pytorch|vllm|tensorrt)-[0-9a-f]{12}")
MAX_MESSAGE_CHARS = 6000
SMALL_LIMIT = 64
"""max_experiments for the in-process loader cases: keeps each case fast; the default limit
has its own test."""
SECRET = "webhook-secret-7f3a"


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


VALID: dict[str, Any] = {
    "name": "fuzz",
    "cycles": 2,
    "order": "shuffled",
    "order_seed": 3,
    "output_dir": "results",
    "timeout_s": 60,
    "gaps": {"between_experiments_s": 0, "between_cycles_s": 0},
    "statistics": {"group_by": ["batch_size"], "confidence": 0.9},
    "base": {
        "model": "builtin:tiny-llama",
        "backend": "pytorch",
        "prompts": {"source": "builtin"},
        "n_prompts": 4,
        "max_input_tokens": 32,
        "max_output_tokens": 8,
        "decoding": {"strategy": "greedy"},
        "warmup": {"runs": 1},
        "measurement": {"sampler_hz": 0, "baseline": {"enabled": False}},
        "pytorch": {"attn_implementation": "sdpa"},
        "passthrough_kwargs": {"low_cpu_mem_usage": True},
    },
    "grid": {"batch_size": [1, 2], "precision": ["fp32", "bf16"]},
    "experiments": [{"batch_size": 4, "decoding": {"strategy": "sampling", "top_k": 5}}],
}

VALID_SETTINGS: dict[str, Any] = {
    "results_dir": "results",
    "runner": "local",
    "gaps": {"between_experiments_s": 0, "between_cycles_s": 0},
    "max_experiments": 100,
    "carbon_intensity_g_per_kwh": 250.0,
    "pue": 1.2,
    "webhooks": {
        "urls": [f"https://hooks.example.com/services/{SECRET}"],
        "events": ["campaign_finished"],
        "timeout_s": 2,
        "retries": 1,
    },
}


def key_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into data, lists included: where a mutation can land."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            paths += key_paths(value, (*prefix, i))
    return paths


TRAVERSAL = [
    "..",
    "../..",
    "../../etc/passwd",
    "/etc",
    "/",
    "/tmp/lem-escape",
    "a/../../b",
    "./../x",
    "results/../../escape",
    "~/escape",
    "~root",
    "..\\..\\windows",
    "%2e%2e/%2e%2e",
    "CON",
    "a\x00b",
    "\x00",
    " ",
    "",
    "name/with/slashes",
    "-rf",
]
UNICODE = [
    "ünïcödé",
    "名前",
    "🔥" * 20,
    "\u202eevil\u202c",  # right-to-left override
    "\x1b[31mred\x1b[0m",
    "tab\there",
    "line\nbreak",
    "\ud800",
    "zero\u200bwidth",
    "a" * 5000,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**30)]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.sampled_from(TRAVERSAL + UNICODE),
    st.binary(max_size=8),
    st.dates(),
)


def deep(depth: int) -> str:
    """A marker the writer swaps for a flow list nested `depth` deep (a YAML or JSON dumper
    would itself recurse too far to write it)."""
    return f"__DEEP_{depth}__"


HOSTILE = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=6),
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=4),
    st.integers(min_value=20, max_value=3000).map(deep),
    st.integers(min_value=100, max_value=1500).map(lambda n: list(range(n))),
    st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children)
        ),
        max_leaves=12,
    ),
)


def set_path(data: Any, path: tuple[Any, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def delete_path(data: Any, path: tuple[Any, ...]) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


@st.composite
def mutated_campaigns(draw: st.DrawFn, template: dict[str, Any] = VALID) -> dict[str, Any]:
    """The valid campaign with one to three of: a value replaced by something hostile, a key
    deleted, a key added (hostile name and value)."""
    data = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(1, 3))):
        paths = key_paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        try:
            if action == "replace":
                set_path(data, path, draw(HOSTILE))
            elif action == "delete":
                delete_path(data, path)
            else:
                parent = path[:-1]
                node = data
                for part in parent:
                    node = node[part]
                if isinstance(node, dict):
                    node[draw(st.sampled_from([*TRAVERSAL, *UNICODE, "extra", "grid"]))] = draw(
                        HOSTILE
                    )
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced the container
    return data


def render(data: Any, as_json: bool) -> str:
    """YAML or JSON text of data, with deep markers swapped for deeply nested flow lists."""
    if as_json:
        text = json.dumps(data, default=str, allow_nan=True, ensure_ascii=False)
    else:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)

    def nest(match: re.Match[str]) -> str:
        depth = int(match[1])
        return "[" * depth + "1" + "]" * depth

    return re.sub(r"[\"']?__DEEP_(\d+)__[\"']?", nest, text)


def write_doc(path: Path, data: Any, as_json: bool) -> Path:
    """data as a YAML or JSON file; a lone surrogate JSON cannot escape goes out as invalid
    UTF-8 bytes, itself a hostile file."""
    try:
        text = render(data, as_json)
    except ValueError:
        text = render(data, as_json=False)
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    return path


class Sandbox:
    """A working directory whose whole contents are compared before and after a case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def snapshot(self) -> set[Path]:
        return set(self.root.rglob("*"))

    @contextlib.contextmanager
    def cwd(self) -> Iterator[None]:
        old = Path.cwd()
        os.chdir(self.root)
        try:
            yield
        finally:
            os.chdir(old)


def assert_clean_message(error: ConfigError, path: Path | str) -> None:
    message = str(error)
    assert error.exit_code == 2
    assert message.strip(), "empty message"
    assert str(path) in message, f"the message does not name the file: {message[:500]}"
    assert len(message) < MAX_MESSAGE_CHARS, f"message of {len(message)} chars"
    for line in message.split("\n"):
        assert line.isprintable(), f"unprintable: {line[:200]!r}"
    for leak in ("Traceback", "object at 0x", "<class ", "Error(", "pydantic"):
        assert leak not in message, f"internals in the message: {message[:500]}"
    message.encode("utf-8")  # no lone surrogates


def assert_safe_campaign(campaign: Any) -> None:
    """What a loaded campaign will use as names on disk."""
    assert re.fullmatch(CAMPAIGN_NAME_PATTERN, campaign.config.name)
    for exp in campaign.experiments:
        assert ID_PATTERN.fullmatch(exp.experiment_id), exp.experiment_id
    out = Path(campaign.config.output_dir)
    assert not out.is_absolute() and ".." not in out.parts
    assert "\x00" not in campaign.config.output_dir


def load_or_refuse(path: Path, limit: int = SMALL_LIMIT) -> Any:
    """Load path; a ConfigError must be clean. Anything else fails the test."""
    try:
        campaign = load_campaign(path, max_experiments=limit)
    except ConfigError as e:
        assert_clean_message(e, path)
        event(f"refused: {type(e).__name__}")
        return None
    assert_safe_campaign(campaign)
    event("loaded")
    return campaign


# ------------------------------------------------------------------------ in-process: loader


@fuzz(450)
@given(
    doc=st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.one_of(st.text(max_size=10), st.sampled_from(list(VALID))), children
            ),
        ),
        max_leaves=25,
    ),
    as_json=st.booleans(),
)
def test_random_documents(
    tmp_path_factory: pytest.TempPathFactory, doc: Any, as_json: bool
) -> None:
    load_or_refuse(write_doc(tmp_path_factory.mktemp("doc") / "campaign.yaml", doc, as_json))


@fuzz(750)
@given(data=mutated_campaigns(), as_json=st.booleans())
def test_mutated_campaigns(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any], as_json: bool
) -> None:
    load_or_refuse(write_doc(tmp_path_factory.mktemp("mutated") / "campaign.yaml", data, as_json))


@fuzz(300)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["insert", "delete", "replace"]),
            st.one_of(
                st.sampled_from([*":-[]{}&*!|>'\"%@`#,?\n\t ", "\x00", "\xff", "\ufeff"]),
                st.text(max_size=3),
            ),
        ),
        min_size=1,
        max_size=5,
    ),
    binary=st.booleans(),
)
def test_mutated_text(
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[float, str, str]],
    binary: bool,
) -> None:
    """Character-level damage to a valid file: syntax errors, wrong indentation, stray
    anchors and tags, NUL, a BOM, invalid UTF-8."""
    text = yaml.safe_dump(VALID, sort_keys=False)
    for where, action, chars in edits:
        i = int(where * len(text))
        if action == "insert":
            text = text[:i] + chars + text[i:]
        elif action == "delete":
            text = text[:i] + text[i + len(chars) + 1 :]
        else:
            text = text[:i] + chars + text[i + len(chars) :]
    raw = text.encode("utf-8", errors="surrogatepass")
    if binary:
        raw = raw.replace(b"\xc3", b"\xff")  # invalid UTF-8 wherever the edit put a non-ASCII
        raw += b"\xfe"
    path = tmp_path_factory.mktemp("text") / "campaign.yaml"
    path.write_bytes(raw)
    load_or_refuse(path)


@fuzz(200)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    backends=st.lists(st.sampled_from(["pytorch", "vllm", "tensorrt"]), min_size=1, max_size=3),
    explicit=st.integers(0, 5),
    limit=st.integers(1, 60),
)
def test_grid_size_limit(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    backends: list[str],
    explicit: int,
    limit: int,
) -> None:
    """Grids far beyond any limit are refused from their count alone (a 40^12 grid costs
    nothing), with the count and how to go ahead; grids within the limit load."""
    grid: dict[str, list[Any]] = {"backend": backends}
    for i, size in enumerate(sizes):
        grid[f"seed{i}"] = list(range(size))
    data = {"name": "big", "grid": grid}
    if explicit:
        data["experiments"] = [{"batch_size": b + 1} for b in range(explicit)]
    count = 0
    for _backend in backends:
        product = 1
        for size in sizes:
            product *= size
        count += product
    count += explicit
    path = tmp_path_factory.mktemp("grid") / "campaign.yaml"
    # seed<i> is no parameter: swap in real universal keys, one per dimension
    text = yaml.safe_dump(data).replace("seed0:", "seed:")
    for i in range(1, len(sizes)):
        text = text.replace(f"seed{i}:", f"passthrough_kwargs.k{i}:")
    path.write_text(text, encoding="utf-8")
    loaded = yaml.safe_load(text)
    from llenergymeasure.config.campaign import CampaignConfig

    assert count_experiments(CampaignConfig.model_validate(loaded)) == count
    if count > limit:
        with pytest.raises(TooManyExperimentsError) as info:
            load_campaign(path, max_experiments=limit)
        assert_clean_message(info.value, path)
        assert f"{count:,} experiments" in str(info.value)
        hint = "split the campaign" if count > HARD_MAX_EXPERIMENTS else "pass --yes"
        assert hint in str(info.value)
        assert info.value.count == count
    else:
        campaign = load_or_refuse(path, limit=limit)
        assert campaign is None or len(campaign.experiments) <= count


def test_default_limit_refuses_a_ten_thousand_and_one_grid(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: big\ngrid:\n  seed: " + json.dumps(list(range(10_001))) + "\n")
    with pytest.raises(TooManyExperimentsError) as info:
        load_campaign(path)
    assert "expands to 10,001 experiments, more than max_experiments (10,000)" in str(info.value)


@fuzz(250)
@given(data=mutated_campaigns(VALID_SETTINGS), as_json=st.booleans())
def test_mutated_settings_never_show_the_webhook_url(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any], as_json: bool
) -> None:
    """A broken .lem-config.yaml is a clean error that never echoes a webhook URL (a secret),
    however the webhook section is broken."""
    directory = tmp_path_factory.mktemp("settings")
    path = write_doc(directory / SETTINGS_FILE, data, as_json)
    try:
        loaded = load_settings(directory, env={})
    except ConfigError as e:
        assert_clean_message(e, path)
        assert SECRET not in str(e)
        return
    assert SECRET not in repr(loaded)
    assert SECRET not in loaded.record().model_dump_json()


# ------------------------------------------------------- writes stay inside the output dir


@fuzz(150)
@given(
    name=st.one_of(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True),
        st.sampled_from(TRAVERSAL + UNICODE),
        st.text(max_size=70),
    ),
    output_dir=st.one_of(
        st.from_regex(r"[A-Za-z0-9._~ -]{1,6}(/[A-Za-z0-9._~ -]{0,6}){0,3}", fullmatch=True),
        st.sampled_from(TRAVERSAL + UNICODE),
        st.text(max_size=30),
    ),
)
def test_names_and_output_dirs_never_write_outside(
    tmp_path_factory: pytest.TempPathFactory, name: str, output_dir: str
) -> None:
    """create_campaign lays out the whole campaign directory (every exp.json, the manifest):
    with any name and output_dir a file may hold, every path it writes is inside the output
    directory under the working directory, or the file is refused first."""
    sandbox = Sandbox(tmp_path_factory.mktemp("sandbox"))
    work = sandbox.root / "work"
    work.mkdir()
    data = {**VALID, "name": name, "output_dir": output_dir}
    path = write_doc(work / "campaign.yaml", data, as_json=False)
    before = sandbox.snapshot()
    with Sandbox(work).cwd():
        campaign = load_or_refuse(path)
        if campaign is None:
            assert sandbox.snapshot() == before
            return
        try:
            directory = create_campaign(campaign, settings=Settings())
        except ConfigError as e:  # e.g. output_dir names an existing file
            assert_clean_message(e, campaign.config.output_dir)
            assert sandbox.snapshot() == before
            return
    root = (work / campaign.config.output_dir).resolve()
    assert directory.parent == root
    assert root.is_relative_to(work.resolve())
    for new in sandbox.snapshot() - before:
        # inside the output root, or one of the folders made on the way to it
        inside = new.resolve().is_relative_to(root)
        assert inside or (root.is_relative_to(new.resolve()) and new.is_relative_to(work)), new


# --------------------------------------------------------------------------- through the CLI


@fuzz(150)
@given(data=mutated_campaigns(), as_json=st.booleans(), json_out=st.booleans())
def test_cli_exit_codes(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any], as_json: bool, json_out: bool
) -> None:
    """`lem campaign FILE --dry-run` (the real entry point, in-process): exit 0 or 2, an
    `error:` line and never a traceback, and nothing written anywhere."""
    sandbox = Sandbox(tmp_path_factory.mktemp("cli"))
    (sandbox.root / SETTINGS_FILE).write_text("runner: local\n", encoding="utf-8")
    write_doc(sandbox.root / "campaign.yaml", data, as_json)
    before = sandbox.snapshot()
    stdout, stderr = io.StringIO(), io.StringIO()
    args = ["campaign", "campaign.yaml", "--dry-run", *(["--json"] if json_out else [])]
    with sandbox.cwd(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli(args)
    said = stdout.getvalue() + stderr.getvalue()
    assert code in (0, 2), said
    assert "Traceback" not in said
    if code == 2:
        assert stderr.getvalue().startswith("error: "), said
    elif json_out:
        json.loads(stdout.getvalue())
    assert sandbox.snapshot() == before


ESCAPE_NAME = f"lem-escape-{uuid.uuid4().hex[:12]}"
"""Unique per run: a directory left in /tmp by anything earlier must not decide the test."""
HOSTILE_FILES: dict[str, bytes] = {
    "deep": b"name: x\nbase:\n  passthrough_kwargs: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "laughs": (
        b"name: x\nbase:\n  passthrough_kwargs:\n"
        + b"".join(
            f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else '1'}]\n".encode()
            for i in range(9)
        )
    ),
    "huge_grid": b"name: x\ngrid:\n"
    + b"".join(f"  seed: [{i}]\n".encode() for i in range(1))
    + b"  passthrough_kwargs.a: "
    + json.dumps(list(range(1000))).encode()
    + b"\n  passthrough_kwargs.b: "
    + json.dumps(list(range(1000))).encode()
    + b"\n",
    "traversal": f"name: x\noutput_dir: ../../../../tmp/{ESCAPE_NAME}\n".encode(),
    "surrogate": b'name: x\nbase:\n  model: "\\ud800"\n',
    "binary": bytes(range(256)) * 4,
    "escape_codes": b"name: x\nbase:\n  \x1b[2Jbatch: 1\n",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
def test_hostile_files_through_the_real_cli(tmp_path: Path, kind: str) -> None:
    (tmp_path / SETTINGS_FILE).write_text("runner: local\n", encoding="utf-8")
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(HOSTILE_FILES[kind])
    before = set(tmp_path.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "-m", "llenergymeasure.cli", "campaign", path.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "\x1b[2J" not in proc.stderr
    assert set(tmp_path.rglob("*")) == before
    assert not (Path("/tmp") / ESCAPE_NAME).exists()
