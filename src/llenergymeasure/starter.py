"""`lem init`: a commented starter campaign and `.lem-config.yaml`, from a few answers.

Both files are rendered from templates whose comments teach the keys, then validated exactly as
`lem campaign` would read them before anything is written: a bad answer is a ConfigError and
leaves no file behind. Existing files are never overwritten without `force`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.grid import campaign_from_data
from llenergymeasure.config.loader import YamlDocument, explain_validation_error
from llenergymeasure.config.settings import SETTINGS_FILE, UserSettings
from llenergymeasure.errors import ConfigError

CAMPAIGN_FILE = "campaign.yaml"


@dataclass(frozen=True)
class Answers:
    """What `lem init` asks; the defaults are what --non-interactive writes."""

    name: str = "starter"
    model: str = "builtin:tiny-llama"
    backends: list[str] = field(default_factory=lambda: ["pytorch"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    cycles: int = 3
    results_dir: str = "results"
    runner: str = "auto"
    carbon_intensity_g_per_kwh: float | None = None
    pue: float | None = None
    has_gpu: bool = True
    precision: str | None = None  # None: bf16 with a GPU (half the memory, full speed), else fp32

    @property
    def chosen_precision(self) -> str:
        return self.precision or ("bf16" if self.has_gpu else "fp32")


def default_name(directory: Path) -> str:
    """A campaign name from the directory's name (letters, digits, '.', '_', '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", directory.resolve().name).strip("._-")[:64]
    return name or Answers.name


CAMPAIGN_TEMPLATE = """\
# {name}: a starter campaign written by `lem init`.
#   lem campaign {file} --dry-run     list what would run
#   lem campaign {file}               run it; `lem results` / `lem report` read it back
# `lem config list` describes every key; README, "A campaign file", explains the grid.
name: {name}
cycles: {cycles}               # repeat the whole set: statistics and CIs need several runs
order: shuffled                # interleaved (A B, A B) | shuffled | grouped (A A, B B)
order_seed: 1                  # the shuffled order is reproducible from this
base:                          # settings shared by every experiment
  model: {model}               # builtin:tiny-llama needs no download; or a Hugging Face id
  backend: {backend}
  prompts: {{source: builtin}}   # or {{source: jsonl, path: prompts.jsonl}}
  n_prompts: 16
  max_output_tokens: 64        # ignore_eos (default) makes every request this long
  precision: {precision}
  warmup: {{runs: 2}}
grid:                          # every combination becomes an experiment
{backend_line}  batch_size: {batch_sizes}    # batch size alone moves energy per token >10x
"""

SETTINGS_TEMPLATE = """\
# Settings of this machine for lem (README, "User settings"), found from the working
# directory upwards. Per key: CLI flag > campaign file > LEM_* variable > this file > default.
results_dir: {results_dir}        # results root (-o, LEM_OUTPUT_DIR)
runner: {runner}                  # auto | local | docker | docker-persistent (LEM_RUNNER)
{gaps_comment}gaps: {{between_experiments_s: {gap_e}, between_cycles_s: {gap_c}}}
max_experiments: 10000           # a bigger campaign needs --yes
carbon_intensity_g_per_kwh: {carbon}   # your grid's gCO2/kWh: results get co2_g; null: none
pue: {pue}                        # facility PUE: results get facility_energy_j; null: none
# webhooks:                      # POST JSON when an experiment ends and when a campaign ends
#   urls: [https://hooks.example.com/services/...]   # a secret: never logged or recorded
#   events: [experiment_done, experiment_failed, campaign_finished]
#   timeout_s: 5
#   retries: 2
"""


def _yaml(value: Any) -> str:
    """A value as YAML (JSON is YAML): strings quoted only where YAML needs it."""
    text = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", value):
        parsed = yaml.safe_load(value)
        return value if parsed == value else text
    return text


def render(answers: Answers, campaign_file: str = CAMPAIGN_FILE) -> tuple[str, str]:
    """(campaign.yaml, .lem-config.yaml) text."""
    several = len(answers.backends) > 1
    campaign = CAMPAIGN_TEMPLATE.format(
        name=_yaml(answers.name),
        file=campaign_file,
        cycles=answers.cycles,
        model=_yaml(answers.model),
        backend=_yaml(answers.backends[0]),
        precision=answers.chosen_precision,
        backend_line=f"  backend: {_yaml(answers.backends)}\n" if several else "",
        batch_sizes=_yaml(answers.batch_sizes),
    )
    gap_e, gap_c = (5, 30) if answers.has_gpu else (0, 0)
    no_gpu = "# No NVIDIA GPU was found: no GPU to cool down between experiments.\n"
    settings = SETTINGS_TEMPLATE.format(
        results_dir=_yaml(answers.results_dir),
        runner=_yaml(answers.runner),
        gaps_comment="" if answers.has_gpu else no_gpu,
        gap_e=gap_e,
        gap_c=gap_c,
        carbon=_yaml(answers.carbon_intensity_g_per_kwh),
        pue=_yaml(answers.pue),
    )
    return campaign, settings


def check(campaign_text: str, settings_text: str, directory: Path) -> None:
    """Validate both texts as `lem campaign` would read them; a ConfigError says which."""
    try:
        campaign_from_data(yaml.safe_load(campaign_text), directory)
    except ConfigError as e:
        raise ConfigError(f"these answers do not make a valid {CAMPAIGN_FILE}: {e}") from e
    doc = YamlDocument(path=Path(SETTINGS_FILE), data=yaml.safe_load(settings_text), node=None)
    try:
        UserSettings.model_validate(doc.data)
    except ValidationError as e:
        raise explain_validation_error(e, UserSettings, doc, context="from these answers") from e


def write(directory: Path, answers: Answers, *, force: bool) -> list[Path]:
    """Write campaign.yaml and .lem-config.yaml into directory; refuses to overwrite either
    unless force, and writes nothing unless both are valid."""
    targets = [directory / CAMPAIGN_FILE, directory / SETTINGS_FILE]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; "
            "use --force to overwrite"
        )
    campaign_text, settings_text = render(answers)
    check(campaign_text, settings_text, directory)
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in zip(targets, (campaign_text, settings_text), strict=True):
        write_text_atomic(path, text)
    return targets


def outside(results_dir: str, directory: Path) -> bool:
    """Whether results_dir (as .lem-config.yaml in directory reads it) leaves directory's
    tree: results written there are easy to lose track of, or land on another disk."""
    path = Path(results_dir).expanduser()
    target = (path if path.is_absolute() else directory / path).resolve()
    return not target.is_relative_to(directory.resolve())


def _numbers(text: str, kind: type[int] | type[float]) -> list[Any]:
    try:
        return [kind(part) for part in text.replace(",", " ").split()]
    except ValueError as e:
        raise ConfigError(f"expected numbers separated by commas, got {text!r}") from e


def _optional_number(text: str) -> float | None:
    values = _numbers(text, float)
    if len(values) > 1:
        raise ConfigError(f"expected one number, got {text!r}")
    return values[0] if values else None


def ask(defaults: Answers, directory: Path) -> Answers:
    """The questions of `lem init`, each answer checked as it is given (rendered into both
    files and validated as `lem campaign` reads them); a bad answer is explained and asked
    again, so nine answers are never lost to the last one."""
    answers = defaults

    def question(
        label: str, default: str, apply: Callable[[str], dict[str, Any]], show: bool = True
    ) -> None:
        nonlocal answers
        while True:
            text = typer.prompt(label, default=default, show_default=show)
            try:
                candidate = dataclasses.replace(answers, **apply(text.strip()))
                check(*render(candidate), directory)
            except ConfigError as e:
                typer.echo(f"  not valid: {e}; try again", err=True)
                continue
            answers = candidate
            return

    def results(text: str) -> dict[str, Any]:
        if outside(text, directory) and not typer.confirm(
            f"  {text} is outside {directory.resolve()}; write results there?",
            default=False,
        ):
            raise ConfigError(f"results_dir outside {directory.resolve()} not confirmed")
        return {"results_dir": text}

    def listed(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    suggested = "bf16" if defaults.has_gpu else "fp32"
    why = "bf16 suggested on a GPU" if defaults.has_gpu else "no GPU found: fp32"
    question("Campaign name", defaults.name, lambda t: {"name": t})
    question(
        "Model (a Hugging Face id or builtin:tiny-llama)", defaults.model, lambda t: {"model": t}
    )
    question(
        "Backends (comma-separated)",
        ",".join(defaults.backends),
        lambda t: {"backends": listed(t) or defaults.backends},
    )
    question(
        "Batch sizes (comma-separated)",
        ",".join(map(str, defaults.batch_sizes)),
        lambda t: {"batch_sizes": _numbers(t, int) or defaults.batch_sizes},
    )
    question("Cycles", str(defaults.cycles), lambda t: {"cycles": (_numbers(t, int) or [0])[0]})
    question(f"Precision: fp32, fp16 or bf16 ({why})", suggested, lambda t: {"precision": t})
    question("Results directory", defaults.results_dir, results)
    question(
        "Runner (auto, local, docker, docker-persistent)", defaults.runner, lambda t: {"runner": t}
    )
    question(
        "Grid carbon intensity, gCO2/kWh (empty: not set)",
        "",
        lambda t: {"carbon_intensity_g_per_kwh": _optional_number(t)},
        show=False,
    )
    question(
        "PUE of the facility (empty: not set)",
        "",
        lambda t: {"pue": _optional_number(t)},
        show=False,
    )
    return answers
