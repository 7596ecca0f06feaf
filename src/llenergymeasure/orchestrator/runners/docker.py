"""What both Docker runners share: pre-flight checks, one compose project per campaign, and a
docker CLI command run under a time limit with its output in the experiment's log.

python-on-whales drives the real docker CLI and Compose v2. The two long-running commands
(`compose run`, `compose exec`) are started from its compose command line with Popen, because
they must write straight into the log file and be stopped at the time limit; python-on-whales
returns a command's output only once it ends.

Containers see the same absolute paths as the host: the results root read-write and the campaign
file's directory read-only (relative prompt files resolve against it), so every path inside
exp.json is valid on both sides. HF_TOKEN reaches containers from the caller's environment
through compose.yaml; it is never put on a command line or into a file written here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException, NoSuchContainer, NoSuchImage

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.descriptor import descriptor
from llenergymeasure.config.experiment import ExperimentConfig
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.datasets.select import prompt_file
from llenergymeasure.errors import RUN_LOCALLY, DispatchError, PreflightError
from llenergymeasure.models import is_builtin
from llenergymeasure.orchestrator.runners import ContainerRecord, Job, Outcome
from llenergymeasure.results.schema import schema_fingerprint

FINGERPRINT_LABEL = "io.llenergymeasure.schema-fingerprint"
PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_FILE_ENV = "LEM_COMPOSE_FILE"
ENV_FILE = "compose.env"
MIN_COMPOSE = (2, 24)  # compose.cpu.yaml uses `!reset`
STOP_TIMEOUT_S = 5  # what `down` gives a container between SIGTERM and SIGKILL
POLL_S = 0.1
COMPOSE_FILE = "compose.yaml"
WORKER_COMMAND = "lem-worker"
"""What marks a compose file as this project's (its services run the worker)."""


def source_checkout() -> Path | None:
    """The project directory this package is installed from in editable mode, as pip recorded
    it (PEP 610's direct_url.json); None for a regular install."""
    try:
        text = importlib.metadata.distribution("llenergymeasure").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return None
    url = urlsplit(str(data.get("url", "")))
    if not data.get("dir_info", {}).get("editable") or url.scheme != "file":
        return None
    return Path(url2pathname(url.path))


def find_compose_file(start: Path | None = None) -> Path:
    """This project's compose.yaml: LEM_COMPOSE_FILE; else the nearest compose.yaml at or above
    the working directory whose services run lem-worker; else the one of the checkout an
    editable install runs from. A regular (non-editable) install has no checkout: it needs
    LEM_COMPOSE_FILE or a working directory inside a copy of the project."""
    given = os.environ.get(COMPOSE_FILE_ENV)
    if given:
        return Path(given)
    here = (start or Path.cwd()).resolve()
    looked = []
    for directory in (here, *here.parents):
        candidate = directory / COMPOSE_FILE
        if candidate.is_file() and WORKER_COMMAND in candidate.read_text(errors="replace"):
            return candidate
    looked.append(f"{here} and the folders above it")
    checkout = source_checkout()
    if checkout is not None and (checkout / COMPOSE_FILE).is_file():
        return checkout / COMPOSE_FILE
    looked.append(
        f"the editable checkout {checkout}" if checkout else "no checkout (a regular install)"
    )
    raise PreflightError(
        f"no {COMPOSE_FILE} of this project found (looked in: {'; '.join(looked)}): the docker "
        f"runners need it; set {COMPOSE_FILE_ENV}=/path/to/llenergymeasure/{COMPOSE_FILE}, run "
        "lem from inside the project, or use {0}",
        options=(RUN_LOCALLY,),
    )


def compose_files() -> list[Path]:
    """compose.yaml (see find_compose_file), plus compose.cpu.yaml on a host without an NVIDIA
    driver, where the GPU reservation would stop every service starting."""
    main = find_compose_file()
    files = [main]
    if not Path("/dev/nvidiactl").exists():
        files.append(main.with_name("compose.cpu.yaml"))
    for path in files:
        if not path.is_file():
            raise PreflightError(
                f"{path} not found: the docker runners need this project's compose files; "
                f"set {COMPOSE_FILE_ENV}=/path/to/llenergymeasure/compose.yaml "
                "or use {0}",
                options=(RUN_LOCALLY,),
            )
    return files


def last_line(e: DockerException) -> str:
    """The docker CLI's own message (python-on-whales' text repeats the whole command)."""
    text = (e.stderr or e.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit code {e.return_code}"


@dataclass(frozen=True)
class Image:
    ref: str
    id: str
    fingerprint: str | None

    @property
    def current(self) -> bool:
        """Built from this host's result schema (else its results would not be read)."""
        return self.fingerprint == schema_fingerprint()


class DockerEngine:
    """A Docker engine that answers, with Compose v2 and this project's compose files."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.client = DockerClient(compose_files=list(files))
        self._services: dict[str, str] | None = None

    @classmethod
    def connect(cls) -> DockerEngine:
        engine = cls(compose_files())
        try:
            engine.client.system.info()
        except ClientNotFoundError as e:
            raise PreflightError(
                "the docker CLI is not installed; install Docker (scripts/provision-docker.sh "
                "does on Debian) or use {0}",
                options=(RUN_LOCALLY,),
            ) from e
        except DockerException as e:
            raise PreflightError(
                f"no Docker engine answers ({last_line(e)}); start one "
                "(scripts/provision-docker.sh) or use {0}",
                options=(RUN_LOCALLY,),
            ) from e
        try:
            version = engine.client.compose.version()
        except DockerException as e:
            raise PreflightError(
                "Docker Compose v2 is not installed (`docker compose version` failed); install "
                "the compose plugin (scripts/provision-docker.sh) or use {0}",
                options=(RUN_LOCALLY,),
            ) from e
        found = re.search(r"v?(\d+)\.(\d+)", version)
        if found is None or (int(found[1]), int(found[2])) < MIN_COMPOSE:
            raise PreflightError(
                f"Docker Compose {'.'.join(map(str, MIN_COMPOSE))} or newer is needed, found "
                f"{version.strip()!r}; update the compose plugin (scripts/provision-docker.sh)"
            )
        return engine

    def image_ref(self, backend: str) -> str:
        """The image compose.yaml names for a backend's service."""
        service = service_of(backend)
        if self._services is None:
            try:
                config = self.client.compose.config(return_json=True)
            except DockerException as e:
                raise PreflightError(
                    f"{self.files[0]} is not a valid compose file: {last_line(e)}"
                ) from e
            self._services = {name: str(s["image"]) for name, s in config["services"].items()}
        if service not in self._services:
            raise PreflightError(
                f"{self.files[0]} has no service {service!r} for backend {backend!r}"
            )
        return self._services[service]

    def image(self, backend: str) -> Image | None:
        """The backend's image, or None when it has not been built."""
        ref = self.image_ref(backend)
        try:
            found = self.client.image.inspect(ref)
        except NoSuchImage:
            return None
        except DockerException as e:
            raise DispatchError(f"cannot inspect image {ref}: {last_line(e)}") from e
        labels = found.config.labels or {}
        return Image(ref=ref, id=found.id, fingerprint=labels.get(FINGERPRINT_LABEL))

    def require_images(self, backends: list[str]) -> dict[str, Image]:
        """Every backend's image, built from this host's schema; else a PreflightError that
        names the build command."""
        images: dict[str, Image] = {}
        for backend in backends:
            image = self.image(backend)
            if image is None:
                raise PreflightError(
                    f"image {self.image_ref(backend)} is missing; {self.build_hint(backend)}"
                )
            if not image.current:
                raise PreflightError(
                    f"image {image.ref} was built from another version of llenergymeasure "
                    f"(schema fingerprint {image.fingerprint or 'missing'}, this host has "
                    f"{schema_fingerprint()}); rebuild it: {self.build_hint(backend)}"
                )
            images[backend] = image
        return images

    def build_hint(self, backend: str) -> str:
        """The exact commands that build a backend's image (shown to the user, never run)."""
        env = {"LEM_SCHEMA_FINGERPRINT": schema_fingerprint()}
        if os.environ.get("LEM_IMAGE_TAG"):
            env["LEM_IMAGE_TAG"] = os.environ["LEM_IMAGE_TAG"]
        compose = shlex.join(
            [f"{k}={v}" for k, v in env.items()]
            + ["docker", "compose", "-f", str(self.files[0]), "build", service_of(backend)]
        )
        repo = self.files[0].parent
        if (repo / "Makefile").is_file():
            make = shlex.join(
                ["make", "-C", str(repo), "images", f"BACKENDS={service_of(backend)}"]
            )
            return f"build it with `{make}` (or `{compose}`)"
        return f"build it with `{compose}`"


def service_of(backend: str) -> str:
    """The compose service (image) that runs a backend, as its descriptor names it."""
    service = descriptor(backend).service
    if service is None:
        raise PreflightError(
            f"backend {backend!r} has no image (its descriptor names no compose service); "
            "use {0}",
            options=(RUN_LOCALLY,),
        )
    return service


def unreachable_paths(
    configs: list[ExperimentConfig], input_dir: Path, results_dir: Path
) -> list[str]:
    """Host files the experiments need that a container would not see: it sees only the
    campaign file's directory and the results root, at the same paths, and the HF cache."""
    mounts = (input_dir.resolve(), results_dir.resolve())

    def visible(path: Path) -> bool:
        return any(path.resolve().is_relative_to(m) for m in mounts)

    problems: set[str] = set()
    for config in configs:
        if config.prompts.source == "jsonl":
            path = prompt_file(config.prompts, input_dir)
            if not visible(path):
                problems.add(f"prompt file {path}")
        model = config.model
        if is_builtin(model) or not model.startswith(("/", "./", "../", "~")):
            continue  # built in, or a Hugging Face id: the HF cache is shared
        if not model.startswith("/"):
            problems.add(f"model directory {model} (not absolute: it differs in a container)")
        elif not visible(Path(model)):
            problems.add(f"model directory {model}")
    return sorted(problems)


def project_name(campaign_dir: Path) -> str:
    """One compose project per campaign: its containers and network are found and removed
    together, and campaigns running side by side never touch each other's."""
    return "lem-" + re.sub(r"[^a-z0-9_-]", "-", campaign_dir.name.lower())


class CampaignProject:
    """The compose project of one campaign: a client bound to its name and env file
    (`<campaign>/compose.env`: the values compose.yaml is read with, for a hand re-run too)."""

    def __init__(self, engine: DockerEngine, campaign_dir: Path, input_dir: Path) -> None:
        self.name = project_name(campaign_dir)
        # Absolute: compose reads a relative source such as `results` as a named volume
        # (`lem resume` with no arguments finds `results/<campaign>`).
        mounts = {
            "LEM_RESULTS_DIR": str(campaign_dir.resolve().parent),
            "LEM_INPUT_DIR": str(input_dir.resolve()),
        }
        for key, value in mounts.items():
            if os.environ.get(key, value) != value:
                # compose lets the caller's environment override the env file
                raise PreflightError(
                    f"{key} is set to {os.environ[key]} in the environment, but this campaign "
                    f"needs {value}; unset {key} (lem sets it for each campaign)"
                )
        values = {
            **mounts,
            "PUID": os.environ.get("PUID", str(os.getuid())),
            "PGID": os.environ.get("PGID", str(os.getgid())),
        }
        if os.environ.get("LEM_IMAGE_TAG"):  # a hand re-run must use the image lem used
            values["LEM_IMAGE_TAG"] = os.environ["LEM_IMAGE_TAG"]
        env_file = campaign_dir / ENV_FILE
        write_text_atomic(env_file, "".join(f"{k}={v}\n" for k, v in values.items()))
        # Docker would create a missing bind-mount source owned by root: make it as the user.
        hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
        try:
            hf_home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PreflightError(f"cannot create the HF cache {hf_home} (HF_HOME): {e}") from e
        self.client = DockerClient(
            compose_files=list(engine.files),
            compose_project_name=self.name,
            compose_env_files=[env_file],
        )
        # Runners are called from worker threads (several at once with --gpus); close() comes
        # from the campaign loop's thread.
        self._lock = threading.Lock()
        self._closed = False
        self._running: set[CliProcess] = set()

    def command(self, *args: str) -> list[str]:
        """`docker compose --file ... --project-name ... <args>` as an argument list."""
        return [str(part) for part in self.client.compose.docker_compose_cmd] + list(args)

    def refuse_if_closed(self) -> None:
        if self._closed:
            raise DispatchError("the campaign is stopping: no new worker starts")

    @contextlib.contextmanager
    def run_cli(self, args: list[str], log_path: Path) -> Iterator[CliProcess]:
        """Start `docker compose <args>` into log_path, stopped on exit; refused once the
        project is closing, so that no container starts after close() has removed them."""
        cli = CliProcess(self.command(*args), log_path)
        with self._lock:
            self.refuse_if_closed()
            cli.start()
            self._running.add(cli)
        try:
            yield cli
        finally:
            with self._lock:
                self._running.discard(cli)
            cli.stop()

    def close(self) -> None:
        """Stop for good: no command starts after this, those running are killed (before they
        can create another container) and every container of the project is removed."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for cli in running:
            cli.stop()
        self.remove_all()

    def remove_all(self) -> None:
        """Remove every container of the project (the one-off `run` ones too, which `down`
        leaves behind), then its network."""
        try:
            for container in self.client.container.list(
                all=True, filters=[("label", f"{PROJECT_LABEL}={self.name}")]
            ):
                self.remove(container.id)
            self.client.compose.down(timeout=STOP_TIMEOUT_S, quiet=True)
        except DockerException as e:
            raise DispatchError(f"could not remove the containers of {self.name}: {e}") from e

    def signal(self, container: str, sig: signal.Signals) -> bool:
        """Send sig to a container's main process (compose.yaml's `init: true` passes it on to
        lem-worker). False if it could not be sent (not created yet, or already gone)."""
        try:
            self.client.container.kill(container, signal=sig.name)
        except DockerException:
            return False
        return True

    def remove(self, container: str) -> None:
        """Kill and remove a container; gone already is fine."""
        try:
            self.client.container.remove(container, force=True)
        except NoSuchContainer:
            return
        except DockerException as e:
            if "already in progress" not in (e.stderr or ""):
                raise DispatchError(f"could not remove container {container}: {e}") from e
            # `--rm` is removing it: wait for that to finish
            deadline = time.monotonic() + 30
            while self.inspect(container) is not None and time.monotonic() < deadline:
                time.sleep(POLL_S)

    def inspect(self, container: str) -> ContainerRecord | None:
        try:
            found = self.client.container.inspect(container)
        except NoSuchContainer:
            return None
        except DockerException as e:
            raise DispatchError(f"could not inspect container {container}: {e}") from e
        return ContainerRecord(name=found.name, id=found.id, image_digest=found.image)


def env_args(env: dict[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]


def read_spec(job: Job) -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate_json(job.exp_path.read_bytes())
    except (OSError, ValueError) as e:
        raise DispatchError(f"cannot read {job.exp_path}: {e}") from e


class CliProcess:
    """A docker CLI command writing into a log file; stop() (also on leaving a with-block)
    kills its process group unless it ended."""

    def __init__(self, cmd: list[str], log_path: Path) -> None:
        self.cmd, self.log_path = cmd, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        try:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl+C reaches lem alone, which cleans up
                )
        except OSError as e:
            raise DispatchError(f"could not start {shlex.join(self.cmd[:3])}: {e}") from e

    def wait(self, timeout_s: float, on_poll: Callable[[], None] | None = None) -> int | None:
        """The worker's exit code (a signal as -N, like subprocess), or None on timeout;
        on_poll runs between polls while the command lasts."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                code = self.proc.wait(timeout=min(POLL_S, max(left, 0.0)))
            except subprocess.TimeoutExpired:
                if left <= 0:
                    return None
                if on_poll is not None:
                    on_poll()
                continue
            # Docker reports a container killed by signal N as 128+N.
            return -(code - 128) if 128 < code < 160 else code

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> CliProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def outcome(
    code: int | None, t0: float, container: ContainerRecord | None, container_start_s: float = 0.0
) -> Outcome:
    return Outcome(
        returncode=code,
        timed_out=code is None,
        wall_s=time.monotonic() - t0,
        container=container,
        container_start_s=container_start_s,
    )
