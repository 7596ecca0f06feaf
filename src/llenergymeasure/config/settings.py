"""User settings: machine-level choices that do not belong in a campaign file (where results
go, gaps, the runner, carbon intensity and PUE, webhooks, the campaign size limit).

Per key, the first of: a CLI flag > the campaign file (for the keys it has: output_dir, gaps,
runner) > an environment variable (ENV_VARS) > `.lem-config.yaml` > the default. The file is
looked up from the working directory upwards, so a project's settings apply in its subfolders.
What a campaign ran with is recorded in its manifest (SettingsRecord), webhook URLs excepted:
they are secrets (a Slack or Teams URL is its own credential), held as SecretStr so that no
dump, repr or log can show them, and recorded only as their hosts.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from llenergymeasure.config.campaign import CampaignConfig, Gaps, SettingsRecord, SlurmSettings
from llenergymeasure.config.choices import RunnerChoice
from llenergymeasure.config.grid import DEFAULT_MAX_EXPERIMENTS, HARD_MAX_EXPERIMENTS
from llenergymeasure.config.loader import explain_validation_error, format_path, read_yaml
from llenergymeasure.errors import ConfigError, printable
from llenergymeasure.redact import redact, restore

SETTINGS_FILE = ".lem-config.yaml"

WebhookEvent = Literal["experiment_done", "experiment_failed", "campaign_finished"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "experiment_done",
    "experiment_failed",
    "campaign_finished",
)


class WebhookSettings(BaseModel):
    """Where and when to POST a JSON notification; delivery never holds up a campaign."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    urls: list[SecretStr] = Field(
        min_length=1,
        description="http(s) URLs to POST to. Secrets: never shown, logged or recorded "
        "(only their hosts are).",
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS),
        min_length=1,
        description="Which of experiment_done, experiment_failed, campaign_finished to send.",
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="Per POST attempt.")
    retries: int = Field(
        2, ge=0, le=10, description="Further attempts after a failed POST, backing off."
    )

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[SecretStr]) -> list[SecretStr]:
        for i, url in enumerate(urls):
            if webhook_host(url) is None:
                # The URL itself is never echoed: it may carry a token.
                raise ValueError(
                    f"webhook URL {i + 1} is not an http:// or https:// URL with a host "
                    "(not shown here: a webhook URL is a secret)"
                )
        return urls

    def hosts(self) -> list[str]:
        return [webhook_host(u) or "?" for u in self.urls]


def webhook_host(url: SecretStr) -> str | None:
    """scheme://host[:port] of a webhook URL (no user, path or query: those hold the
    secrets), or None when it is not an http(s) URL."""
    try:
        parts = urlsplit(url.get_secret_value())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    results_dir: str = Field(
        "results",
        min_length=1,
        description="Results root, relative to the working directory (-o and a campaign "
        "file's output_dir override it).",
    )
    gaps: Gaps = Field(
        default_factory=Gaps, description="Default gaps for campaigns that do not set them."
    )
    runner: RunnerChoice | None = Field(
        None, description="Runner when neither `--runner` nor the campaign file names one."
    )
    gpus: list[int] | None = Field(
        None,
        description="GPU indices to run on, up to one experiment per GPU at a time (--gpus); "
        "null: not pinned.",
    )
    max_experiments: int = Field(
        DEFAULT_MAX_EXPERIMENTS,
        ge=1,
        le=HARD_MAX_EXPERIMENTS,
        description="A campaign that expands to more experiments needs `--yes`.",
    )
    carbon_intensity_g_per_kwh: float | None = Field(
        None,
        ge=0,
        le=5000,
        description="Grid carbon intensity; results get co2_g where energy was measured.",
    )
    pue: float | None = Field(
        None,
        ge=1.0,
        le=10.0,
        description="Power usage effectiveness of the facility; results get "
        "facility_energy_j = energy_raw_j x pue where energy was measured.",
    )
    webhooks: WebhookSettings | None = Field(
        None, description="POST a JSON notification when experiments and campaigns end."
    )
    slurm: SlurmSettings = Field(
        default_factory=SlurmSettings, description="runner slurm: how runs are submitted."
    )
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _file: Path | None = PrivateAttr(None)

    @property
    def file(self) -> Path | None:
        """The settings file these settings were read from, if any (always shown: 27.2)."""
        return self._file

    @property
    def sources(self) -> dict[str, str]:
        """Where each setting that is not a default came from (dotted key -> source)."""
        return dict(self._sources)

    def override(self, source: str, **values: Any) -> UserSettings:
        """A copy with values set from a higher-precedence source (a CLI flag, the campaign
        file); None values are left alone."""
        given = {k: v for k, v in values.items() if v is not None}
        updated = self.model_copy(update=given)
        updated._sources = {**self._sources, **dict.fromkeys(given, source)}
        return updated

    def with_sources(self, sources: Mapping[str, str]) -> UserSettings:
        """A copy that also records where values outside these settings came from (a
        campaign-file key replaced by a flag, say)."""
        updated = self.model_copy()
        updated._sources = {**self._sources, **sources}
        return updated

    def gpus_tuple(self) -> tuple[int, ...] | None:
        return tuple(self.gpus) if self.gpus is not None else None

    def restored(self, record: SettingsRecord) -> UserSettings:
        """These settings with the values and sources a campaign recorded: what `lem resume`
        continues with, whatever the environment and `.lem-config.yaml` say now. Secrets are
        kept from these settings (webhook URLs and slurm's redacted values: never recorded)."""
        updated = self.model_copy(
            update={
                "results_dir": record.results_dir,
                "runner": record.runner,
                "gpus": record.gpus,
                "max_experiments": record.max_experiments,
                "carbon_intensity_g_per_kwh": record.carbon_intensity_g_per_kwh,
                "pue": record.pue,
                "slurm": SlurmSettings.model_validate(
                    restore(record.slurm.model_dump(), self.slurm.model_dump())
                )
                if record.slurm
                else self.slurm,
            }
        )
        webhooks = {k: v for k, v in self._sources.items() if k.startswith("webhooks")}
        updated._sources = {**record.sources, **webhooks}
        return updated

    def record(self) -> SettingsRecord:
        """What a campaign records of these settings: everything but the secrets."""
        return SettingsRecord(
            results_dir=self.results_dir,
            runner=self.runner,
            gpus=self.gpus,
            max_experiments=self.max_experiments,
            carbon_intensity_g_per_kwh=self.carbon_intensity_g_per_kwh,
            pue=self.pue,
            webhook_hosts=self.webhooks.hosts() if self.webhooks is not None else [],
            slurm=SlurmSettings.model_validate(redact(self.slurm.model_dump())),
            sources=self.sources,
        )


def _number(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return kind(text.strip())

    parse.__doc__ = "an integer" if kind is int else "a number"
    return parse


def _text(text: str) -> str:
    """text"""
    return text.strip()


def _urls(text: str) -> list[str]:
    """http(s) URLs separated by spaces"""
    return text.split()


def _flag(text: str) -> bool:
    """true or false (1/0, yes/no, on/off)"""
    word = text.strip().lower()
    if word not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise ValueError(word)
    return word in {"1", "true", "yes", "on"}


def _words(text: str) -> list[str]:
    """words, quoted as in a shell"""
    return shlex.split(text)


def _assignments(text: str) -> dict[str, str]:
    """NAME=value pairs separated by spaces"""
    pairs = [w.partition("=") for w in shlex.split(text)]
    if any(not eq or not name for name, eq, _ in pairs):
        raise ValueError(text)
    return {name: value for name, _, value in pairs}


ENV_VARS: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "LEM_OUTPUT_DIR": (("results_dir",), _text),
    "LEM_RUNNER": (("runner",), _text),
    "LEM_MAX_EXPERIMENTS": (("max_experiments",), _number(int)),
    "LEM_CARBON_INTENSITY_G_PER_KWH": (("carbon_intensity_g_per_kwh",), _number(float)),
    "LEM_PUE": (("pue",), _number(float)),
    "LEM_WEBHOOK_URL": (("webhooks", "urls"), _urls),
    "LEM_GAP_BETWEEN_EXPERIMENTS_S": (("gaps", "between_experiments_s"), _number(float)),
    "LEM_GAP_BETWEEN_CYCLES_S": (("gaps", "between_cycles_s"), _number(float)),
    "LEM_SLURM_PARTITION": (("slurm", "partition"), _text),
    "LEM_SLURM_ACCOUNT": (("slurm", "account"), _text),
    "LEM_SLURM_QOS": (("slurm", "qos"), _text),
    "LEM_SLURM_EXCLUSIVE": (("slurm", "exclusive"), _flag),
    "LEM_SLURM_TIME_MIN": (("slurm", "time_min"), _number(int)),
    "LEM_SLURM_NODE_RUNNER": (("slurm", "node_runner"), _text),
    "LEM_SLURM_EXTRA_SBATCH": (("slurm", "extra_sbatch"), _words),
    "LEM_SLURM_ENVIRONMENT": (("slurm", "environment"), _assignments),
    "LEM_SLURM_ARRAY_PARALLELISM": (("slurm", "array_parallelism"), _number(int)),
}
"""Environment variable -> the setting it sets and how its text is read. Unset or empty
variables are ignored."""
SECRET_ENV_VARS = frozenset({"LEM_WEBHOOK_URL", "LEM_SLURM_ENVIRONMENT", "LEM_SLURM_EXTRA_SBATCH"})


def find_settings_file(start: Path) -> Path | None:
    """The nearest settings file at or above start; one that another user owns or can write
    (a file planted in a shared parent folder) is refused, never obeyed (issue 27.2)."""
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / SETTINGS_FILE
        if candidate.is_file():
            _check_trusted(candidate)
            return candidate
    return None


def _check_trusted(path: Path) -> None:
    for info in (path.lstat(), path.stat()):  # the link, if it is one, and its target
        if info.st_uid not in (os.getuid(), 0) or info.st_mode & stat.S_IWOTH:
            whose = f"owned by uid {info.st_uid}" if info.st_uid not in (os.getuid(), 0) else ""
            raise ConfigError(
                f"settings file {path} is {whose or 'writable by every user'}: refused, as "
                "another user could set where results and webhooks go; remove it, or make it "
                "your own and not writable by others"
            )


def load_settings(start: Path | None = None, env: Mapping[str, str] | None = None) -> UserSettings:
    """The nearest `.lem-config.yaml` at or above start (default: the working directory), with
    the LEM_* environment variables over it (env: default os.environ), over the built-in
    defaults. Any problem is a ConfigError naming the file and key, or the variable."""
    path = find_settings_file(start or Path.cwd())
    file_data: dict[str, Any] = {}
    settings = UserSettings()
    if path is not None:
        doc = read_yaml(path, what="settings file")
        file_data = doc.data
        try:
            settings = UserSettings.model_validate(file_data)
        except ValidationError as e:
            raise explain_validation_error(
                e, UserSettings, doc, context="in user settings", secret=("webhooks", "slurm")
            ) from e
    env_data, env_names = _from_environment(os.environ if env is None else env)
    if env_data:
        try:
            UserSettings.model_validate(env_data)  # alone first: errors name the variable
            settings = UserSettings.model_validate(_merge(file_data, env_data))
        except ValidationError as e:
            raise _explain_env(e, env_names) from e
    settings._file = path
    settings._sources = {
        **dict.fromkeys(_dotted_keys(file_data), str(path)),
        **{key: f"environment ({name})" for key, name in env_names.items()},
    }
    return settings


def _from_environment(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the LEM_* variables set, and which variable set each (dotted key)."""
    data: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, (key, parse) in ENV_VARS.items():
        text = env.get(name, "")
        if not text.strip():
            continue
        try:
            value = parse(text)
        except ValueError as e:
            shown = "" if name in SECRET_ENV_VARS else f"={printable(repr(text), 80)}"
            raise ConfigError(
                f"environment variable {name}{shown}: expected {parse.__doc__}"
            ) from e
        node = data
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
        names[".".join(key)] = name
    return data, names


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dotted_keys(data: dict[str, Any]) -> list[str]:
    """Top-level keys, and gaps' and slurm's own keys (each may come from another place)."""
    keys = [k for k in data if k not in ("gaps", "slurm")]
    for section in ("gaps", "slurm"):
        nested = data.get(section)
        if isinstance(nested, dict):
            keys += [f"{section}.{k}" for k in nested]
    return keys


def _explain_env(error: ValidationError, names: dict[str, str]) -> ConfigError:
    problems = []
    for err in error.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        name = next((n for key, n in names.items() if loc.startswith(key)), None)
        where = f"environment variable {name}" if name else format_path(err["loc"])
        hidden = name in SECRET_ENV_VARS or loc.startswith("webhooks") or "input" not in err
        got = "" if hidden else f" (got {printable(repr(err['input']), 80)})"
        message = printable(str(err["msg"]).removeprefix("Value error, "), 300)
        problems.append(f"{where}: {message}{got}")
    return ConfigError("invalid user settings:\n  " + "\n  ".join(problems))


CAMPAIGN_FILE_SOURCE = "campaign file"


def resolve_settings(
    settings: UserSettings,
    campaign: CampaignConfig,
    flags: Mapping[str, tuple[Any, str]] | None = None,
    campaign_flags: Mapping[str, str] | None = None,
) -> UserSettings:
    """The one precedence, applied once: a flag > the campaign file (output_dir, runner,
    gaps: the keys it sets) > what settings hold (environment > `.lem-config.yaml` >
    default). flags: setting -> (value or None, its source name). campaign_flags: campaign
    keys a flag replaced (timeout_s, retries, cycles, order) -> the flag, for the record.
    Everything downstream (runner choice, gaps, the manifest's record) reads the result."""
    file_values: dict[str, Any] = {"runner": campaign.runner}
    if "output_dir" in campaign.model_fields_set:
        file_values["results_dir"] = campaign.output_dir
    resolved = settings.override(CAMPAIGN_FILE_SOURCE, **file_values)
    if campaign.gaps is not None:
        resolved = resolved.model_copy(update={"gaps": campaign.gaps.over(settings.gaps)})
        set_here = {f"gaps.{k}": CAMPAIGN_FILE_SOURCE for k in campaign.gaps.model_fields_set}
        resolved = resolved.with_sources(set_here)
    if campaign.slurm is not None:
        resolved = resolved.model_copy(update={"slurm": campaign.slurm.over(settings.slurm)})
        set_here = {f"slurm.{k}": CAMPAIGN_FILE_SOURCE for k in campaign.slurm.model_fields_set}
        resolved = resolved.with_sources(set_here)
    for key, (given, source) in (flags or {}).items():
        value = str(given) if isinstance(given, Path) else given
        resolved = resolved.override(
            source, **{key: list(value) if isinstance(value, tuple) else value}
        )
    return resolved.with_sources(dict(campaign_flags or {}))
