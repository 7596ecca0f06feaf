"""One experiment: what to run, on which backend, with which energy-relevant settings.

These models are the contract between the host and the worker (they travel inside exp.json),
the source of `lem config list`, and the identity of an experiment (its id hashes them).
They validate data and nothing else: no I/O, no imports of inference engines.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from llenergymeasure.config.backends import OMIT_IF_NULL
from llenergymeasure.config.capabilities import (
    UNSUPPORTED_VALUE,
    Precision,
    Quantization,
    unsupported_message,
)
from llenergymeasure.config.descriptor import (
    DEFAULT_BACKEND,
    BackendSettings,
    backend_names,
    descriptors,
)
from llenergymeasure.config.server import SERVER_BINDING_KEYS, ServerSpec, server_mode_refusal

DEFAULT_MIN_WINDOW_S = 10.0
"""Shortest measured window worth an energy reading (measurement.min_window_s)."""
BACKEND_SECTIONS: tuple[str, ...] = backend_names()
"""Per-backend sections of ExperimentConfig, one per registered backend (config/descriptor.py);
a grid key `<section>.x` is scoped to that backend."""
SettingsT = TypeVar("SettingsT", bound=BackendSettings)


class _Strict(BaseModel):
    # strict: `batch_size: true` or `"4"` is a mistake to report, not a value to coerce.
    # allow_inf_nan: `.inf` would pass here, then be written to JSON as null (issue 27.5).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PromptSource(_Strict):
    """Where prompts come from. Built-in set, a JSONL file, or synthetic text of a set length."""

    source: Literal["builtin", "jsonl", "synthetic"] = Field(
        "builtin",
        description="builtin: the project's own prompt set; jsonl: a file of "
        '{"prompt": ...} lines; synthetic: random text of exactly `input_tokens` tokens.',
    )
    path: str | None = Field(
        None,
        min_length=1,
        description="JSONL file (source: jsonl), as written; relative to the campaign file.",
    )
    input_tokens: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Tokens of prompt text per synthetic prompt (source: synthetic); the "
        "tokenizer may add special tokens such as BOS, which results count as input.",
    )

    def file(self, base_dir: Path) -> Path | None:
        """The JSONL file (source: jsonl); a relative path is relative to the campaign file."""
        if self.source != "jsonl" or self.path is None:
            return None
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else base_dir / path

    @model_validator(mode="after")
    def _fields_match_source(self) -> PromptSource:
        if self.source == "jsonl" and self.path is None:
            raise ValueError("source 'jsonl' needs `path` (a file of {\"prompt\": ...} lines)")
        if self.source != "jsonl" and self.path is not None:
            raise ValueError(f"`path` is only used with source 'jsonl', not '{self.source}'")
        if self.source == "synthetic" and self.input_tokens is None:
            raise ValueError("source 'synthetic' needs `input_tokens` (tokens per prompt)")
        if self.source != "synthetic" and self.input_tokens is not None:
            raise ValueError(
                f"`input_tokens` is only used with source 'synthetic', not '{self.source}'"
            )
        return self


class DecodingConfig(_Strict):
    """Decoding settings. Greedy by default so that runs are repeatable."""

    strategy: Literal["greedy", "sampling"] = Field(
        "greedy", description="greedy: argmax each step; sampling: temperature/top-p/top-k."
    )
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, le=1_000_000, description="Top-k sampling; 0 disables it.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0, description="1.0 disables it.")
    ignore_eos: bool = Field(
        True,
        description="Generate exactly max_output_tokens per request, so energy per token "
        "compares across configurations (an early EOS would shorten some runs).",
    )
    min_output_tokens: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Tokens generated before EOS may end a request (with ignore_eos: false); "
        "null: no minimum.",
        json_schema_extra=OMIT_IF_NULL,
    )

    @model_validator(mode="after")
    def _sampling_params_need_sampling(self) -> DecodingConfig:
        if self.strategy == "greedy":
            changed = [
                name
                for name, default in (
                    ("temperature", 1.0),
                    ("top_p", 1.0),
                    ("top_k", 0),
                )
                if getattr(self, name) != default
            ]
            if changed:
                raise ValueError(
                    f"greedy decoding ignores {', '.join(changed)}; "
                    "set `strategy: sampling` to use them, or remove them"
                )
        return self

    @model_validator(mode="after")
    def _min_needs_eos(self) -> DecodingConfig:
        if self.ignore_eos and self.min_output_tokens is not None:
            raise ValueError(
                "min_output_tokens has no effect with ignore_eos: true (every request generates "
                "max_output_tokens); set `ignore_eos: false` to use it, or remove it"
            )
        return self


class BaselineConfig(_Strict):
    """Idle GPU power, subtracted from the window's energy to give energy_adjusted_j."""

    enabled: bool = Field(True, description="Measure (or reuse) the idle baseline.")
    duration_s: float = Field(5.0, ge=0.5, le=600, description="Idle window to average over.")
    ttl_s: float = Field(
        3600.0, ge=0, le=7 * 24 * 3600, description="Reuse a GPU's baseline within a campaign."
    )


class MeasurementConfig(_Strict):
    """How energy and the time series are measured."""

    sampler_hz: float = Field(
        10.0,
        ge=0,
        le=50,
        description="Power/temperature/clock sampling rate, 1-50 Hz; 0 turns the sampler off "
        "(then no time series and no fallback when the energy counter is unsupported).",
    )
    baseline: BaselineConfig = Field(default=BaselineConfig(), description="Idle baseline.")
    min_window_s: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="Repeat the prompt set (whole passes) inside the measured window until it "
        "lasts at least this long; 0 turns repetition off (one pass); null: 10. Energy over "
        "windows under ~10 s is noisy and biased low. Applies when GPU energy is measured.",
        json_schema_extra=OMIT_IF_NULL,
    )
    energy_source: Literal["nvml", "zeus", "codecarbon"] | None = Field(
        None,
        description="What measures the window's GPU energy: 'nvml' (null means this) the NVML "
        "energy counter read at synced edges; 'zeus' or 'codecarbon' (optional extras of the "
        "same names) read over the same window, NVML still read beside them per GPU.",
        json_schema_extra=OMIT_IF_NULL,
    )
    phase_split: bool | None = Field(
        None,
        description="After the measured window, serve the same requests again with one output "
        "token each (prefill only), in a window of its own, and split the window's energy into "
        "prefill and decode (scaled per request). Null: off.",
        json_schema_extra=OMIT_IF_NULL,
    )

    @property
    def window_minimum_s(self) -> float:
        """min_window_s with its default resolved (null keeps earlier experiment ids)."""
        return DEFAULT_MIN_WINDOW_S if self.min_window_s is None else self.min_window_s

    @model_validator(mode="after")
    def _rate_in_range(self) -> MeasurementConfig:
        if 0 < self.sampler_hz < 1:
            raise ValueError("sampler_hz must be 0 (off) or between 1 and 50 Hz")
        return self


class WarmupConfig(_Strict):
    """Runs before the measured window: a fixed count, optionally continued until run latency
    settles (caches, clocks and temperature reach a steady state). A run is one pass over the
    batches `cover` picks from the window's own prepared batches, so every kernel shape,
    attention plan and allocator size the window will meet has been met before it opens. Cost
    with the default: runs x (distinct batch shapes) batches, e.g. 3 x 2 for 64 prompts at
    batch 32 whose two batches pad to different lengths."""

    runs: int = Field(
        3,
        ge=0,
        le=1000,
        description="Passes always done (each over the batches `cover` picks).",
    )
    cover: Literal["shapes", "batches", "first_batch"] | None = Field(
        None,
        description="What one pass serves: 'shapes' (null means this) one batch of each "
        "distinct shape the window will run (rows x padded length); 'batches' every batch of "
        "the window; 'first_batch' the first batch only (cheapest; the window then meets "
        "shapes the warm-up never ran).",
        json_schema_extra=OMIT_IF_NULL,
    )

    @property
    def pass_cover(self) -> str:
        """cover with its default resolved (null keeps earlier experiment ids)."""
        return self.cover or "shapes"

    until_cv: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Continue until the coefficient of variation (std/mean) of the last "
        "`window` run latencies is below this; null: stop after `runs`.",
    )
    max_runs: int = Field(
        20, ge=1, le=1000, description="Upper bound on runs while waiting for `until_cv`."
    )
    window: int = Field(
        5, ge=2, le=1000, description="Latest runs whose latency CV is compared to `until_cv`."
    )

    @model_validator(mode="after")
    def _convergence_settings_fit(self) -> WarmupConfig:
        if self.until_cv is None:
            defaults = type(self).model_fields
            unused = [n for n in ("max_runs", "window") if getattr(self, n) != defaults[n].default]
            if unused:
                raise ValueError(
                    f"{' and '.join(unused)} only apply with `until_cv`; set it or remove them"
                )
            return self
        needed = max(self.runs, self.window)
        if self.max_runs < needed:
            raise ValueError(
                f"max_runs ({self.max_runs}) must be at least runs and window "
                f"({needed}) when until_cv is set"
            )
        return self


class ExperimentConfig(_Strict):
    """Everything that defines one measured configuration."""

    model: str = Field(
        "builtin:tiny-llama",
        min_length=1,
        description="Hugging Face id, local directory, or builtin:tiny-llama.",
    )
    backend: str = Field(DEFAULT_BACKEND, description="Inference engine.")
    mode: Literal["offline", "server"] = Field(
        "offline",
        description="offline: the prompt set submitted in batches inside one window; server: "
        "the backend's own OpenAI-compatible server measured under the load levels of "
        "`server:` (one row per level in results).",
    )
    prompts: PromptSource = Field(default=PromptSource(), description="Prompt source.")
    n_prompts: int = Field(16, ge=1, le=1_000_000, description="Requests in the measured window.")
    max_input_tokens: int = Field(
        256, ge=1, le=1_000_000, description="Prompts are truncated to this many tokens."
    )
    max_output_tokens: int = Field(
        64, ge=1, le=1_000_000, description="New tokens generated per request."
    )
    precision: Precision = Field("fp32", description="Weights and activation dtype.")
    quantization: Quantization | None = Field(
        None,
        description="Weight quantisation; which methods a backend supports is listed per "
        "backend. null: none.",
        json_schema_extra=OMIT_IF_NULL,
    )
    batch_size: int = Field(
        1, ge=1, le=100_000, description="Requests per batch; moves energy per token by >10x."
    )
    decoding: DecodingConfig = Field(default=DecodingConfig(), description="Decoding.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for torch, numpy and sampling.")
    warmup: WarmupConfig = Field(
        default=WarmupConfig(), description="Warm-up before the measured window."
    )
    measurement: MeasurementConfig = Field(
        default=MeasurementConfig(), description="Energy and time-series measurement."
    )
    passthrough_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments handed unchanged to the backend's model loader.",
    )
    server: ServerSpec | None = Field(
        None,
        description="Load levels, arrivals, SLO and timeouts of a `mode: server` experiment.",
        json_schema_extra=OMIT_IF_NULL,
    )

    @field_validator("mode")
    @classmethod
    def _backend_serves(cls, value: str, info: ValidationInfo) -> str:
        """Refused at grid expansion, naming the backends that can serve (skip_invalid skips)."""
        backend = info.data.get("backend")
        message = server_mode_refusal(backend) if value == "server" and backend else None
        if message is not None:
            raise PydanticCustomError(UNSUPPORTED_VALUE, message)
        return value

    @model_validator(mode="after")
    def _server_section_matches_mode(self) -> ExperimentConfig:
        if self.mode == "server" and self.server is None:
            raise ValueError("mode: server needs a `server:` section (at least `levels:`)")
        if self.mode != "server" and self.server is not None:
            raise ValueError("section `server:` is set but mode is 'offline'; set `mode: server`")
        if self.mode == "server" and self.batch_size != 1:
            raise ValueError(
                "batch_size does not apply to mode: server (the server batches requests "
                "itself); remove it, or set the engine's own limit such as vllm.max_num_seqs"
            )
        return self

    @field_validator("passthrough_kwargs")
    @classmethod
    def _server_stays_on_loopback(cls, value: dict[str, Any], info: ValidationInfo) -> Any:
        """mode: server binds the server to 127.0.0.1 and a free port the worker picks: a key
        that would rebind it (a second --host after ours wins) is refused."""
        bound = sorted(k for k in value if k.replace("-", "_").lower() in SERVER_BINDING_KEYS)
        if info.data.get("mode") == "server" and bound:
            raise ValueError(
                f"passthrough_kwargs {', '.join(bound)} would rebind the server, which the "
                "worker keeps on 127.0.0.1 and a port of its own; remove them"
            )
        return value

    @field_validator("precision", "quantization")
    @classmethod
    def _backend_supports(cls, value: Any, info: ValidationInfo) -> Any:
        """Reject a value the chosen backend cannot run, naming the ones it can (the
        capability table in config/capabilities.py)."""
        backend = info.data.get("backend")
        message = unsupported_message(backend, str(info.field_name), value) if backend else None
        if message is not None:
            raise PydanticCustomError(UNSUPPORTED_VALUE, message)
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_fits_prompts(cls, value: int, info: ValidationInfo) -> int:
        """A batch larger than n_prompts would run n_prompts but be recorded as batch_size:
        refuse it rather than label data with what did not run (issue 14 point 2)."""
        n_prompts = info.data.get("n_prompts")
        if n_prompts is not None and value > n_prompts:
            raise PydanticCustomError(
                UNSUPPORTED_VALUE,
                "batch_size {batch_size} exceeds n_prompts {n_prompts}: only {n_prompts} "
                "requests would run in one batch; lower batch_size or raise n_prompts",
                {"batch_size": value, "n_prompts": n_prompts},
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_own_section(cls, data: Any) -> Any:
        """Give the chosen backend its section, so `pytorch: {}` and no section hash alike."""
        if isinstance(data, dict):
            backend = data.get("backend", DEFAULT_BACKEND)
            if backend in BACKEND_SECTIONS and data.get(backend) is None:
                data = {**data, backend: {}}
        return data

    @field_validator(*BACKEND_SECTIONS, check_fields=False)  # the sections: see the end
    @classmethod
    def _no_foreign_section(cls, value: Any, info: ValidationInfo) -> Any:
        backend = info.data.get("backend")
        if value is not None and backend is not None and info.field_name != backend:
            raise ValueError(
                f"section `{info.field_name}:` is set but backend is '{backend}'; "
                f"use `{backend}:` or change the backend"
            )
        return value

    @model_validator(mode="after")
    def _min_within_max(self) -> ExperimentConfig:
        minimum = self.decoding.min_output_tokens
        if minimum is not None and minimum > self.max_output_tokens:
            raise ValueError(
                f"decoding.min_output_tokens ({minimum}) exceeds max_output_tokens "
                f"({self.max_output_tokens})"
            )
        warm = self.warmup
        if getattr(getattr(self, "pytorch", None), "decode", None) == "cuda_graphs" and (
            warm.runs < 2 or warm.pass_cover == "first_batch"
        ):
            raise ValueError(
                "pytorch.decode: cuda_graphs compiles per batch shape in the warm-up's first "
                "pass: set warmup.runs to 2 or more and leave warmup.cover at shapes or batches"
            )
        return self

    def gpus_required(self) -> int:
        """GPUs one run occupies, for the scheduler, as the backend's settings say (the
        engine's tensor x pipeline parallel size; PyTorch's device_map spreads over whatever
        GPUs the run is given)."""
        return self.backend_settings(BackendSettings).gpus_required()

    def backend_settings(self, model: type[SettingsT]) -> SettingsT:
        """The chosen backend's settings section, as the model its engine expects."""
        section = getattr(self, self.backend, None)
        if not isinstance(section, model):
            raise TypeError(f"backend {self.backend!r} has settings {section!r}, not {model}")
        return section

    def identity(self) -> dict[str, Any]:
        """The effective config as canonical JSON-able data: what the experiment id hashes.
        Null settings marked OMIT_IF_NULL are left out, so adding such a setting (or another
        backend's section) keeps the ids of experiments that do not use it."""
        data = _prune_nulls(self.model_dump(mode="json"), _pruning_plan(ExperimentConfig))
        if data["mode"] == "offline":  # the default, left out: ids from before server mode stay
            del data["mode"]
        return data

    def experiment_id(self) -> str:
        """Stable id: same effective config -> same id, on every run and machine."""
        return f"{self.backend}-{config_hash(self.identity())[:12]}"


def _with_backend_sections(fields: type[ExperimentConfig]) -> type[ExperimentConfig]:
    """ExperimentConfig with one optional settings section per registered backend and
    `backend` limited to their names: built from the descriptors, so a backend registered as a
    plugin validates, expands in grids and is listed like a built-in one."""
    names = backend_names()
    sections: dict[str, Any] = {
        name: (
            found.settings | None,
            Field(
                None,
                description=found.section_description,
                json_schema_extra=OMIT_IF_NULL,
            ),
        )
        for name, found in descriptors().items()
    }
    backend = fields.model_fields["backend"]
    names_type: Any = Literal[names]
    return create_model(
        "ExperimentConfig",
        __base__=fields,
        __module__=__name__,
        __doc__=fields.__doc__,
        backend=(names_type, Field(backend.default, description=backend.description)),
        **sections,
    )


if not TYPE_CHECKING:  # for the type checker the sections are reached by backend_settings()
    ExperimentConfig = _with_backend_sections(ExperimentConfig)


PruningPlan = tuple[tuple[str, ...], tuple[tuple[str, "PruningPlan"], ...]]


def _prune_nulls(data: dict[str, Any], plan: PruningPlan) -> dict[str, Any]:
    omittable, nested = plan
    for name in omittable:
        if data[name] is None:
            del data[name]
    for name, inner in nested:
        section = data.get(name)
        if section is not None:
            _prune_nulls(section, inner)
    return data


@functools.cache
def _pruning_plan(model: type[BaseModel]) -> PruningPlan:
    """A model's fields left out of the identity when null, and the plans of those that hold a
    model. Worked out once per class and applied to the dumped data alone: reading the models
    on every call made a 100,000-experiment grid spend much of its expansion here."""
    fields = model.model_fields
    omittable = tuple(n for n, f in fields.items() if f.json_schema_extra == OMIT_IF_NULL)
    nested = tuple(
        (n, _pruning_plan(types[0]))
        for n, f in fields.items()
        if (types := _model_types(f.annotation))
    )
    return omittable, nested


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation names (`PyTorchConfig | None` -> PyTorchConfig)."""
    return [
        a
        for a in (annotation, *get_args(annotation))
        if isinstance(a, type) and issubclass(a, BaseModel)
    ]


def parameter_names() -> set[str]:
    """Every experiment parameter as a dotted name (`batch_size`, `decoding.temperature`,
    `pytorch.attn_implementation`): what results and summaries can be grouped by."""

    def walk(model: type[BaseModel], prefix: str) -> set[str]:
        names: set[str] = set()
        for name, field in model.model_fields.items():
            nested = _model_types(field.annotation)
            if nested:
                names |= walk(nested[0], f"{prefix}{name}.")
            elif name != "passthrough_kwargs":
                names.add(prefix + name)
        return names

    return walk(ExperimentConfig, "")


def config_hash(data: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace): stable across runs and machines."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()
