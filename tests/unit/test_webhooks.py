"""Webhook notifications against a real HTTP server on localhost: what is sent, retries with
backoff, giving up, never blocking the caller, never showing the URL."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from webhook_server import Recorder, webhook_server

from llenergymeasure.config import load_campaign
from llenergymeasure.config.settings import UserSettings, WebhookSettings
from llenergymeasure.orchestrator.broadcast import Broadcast
from llenergymeasure.orchestrator.campaign import Events, RunSummary
from llenergymeasure.orchestrator.layout import create_campaign
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry, ManifestStore
from llenergymeasure.orchestrator.webhooks import QUEUE_SIZE, WebhookNotifier
from llenergymeasure.results.schema import ExperimentResult

WriteYaml = Callable[..., Path]
SECRET_PATH = "/services/T000/B000/secret-token-c0ffee"


def hooks(url: str, **fields: object) -> WebhookSettings:
    return WebhookSettings.model_validate(
        {"urls": [SecretStr(url + SECRET_PATH)], "timeout_s": 2, "retries": 2, **fields}
    )


@pytest.fixture
def manifest(tmp_path: Path, write_yaml: WriteYaml) -> Manifest:
    campaign = load_campaign(write_yaml("name: hooks\ncycles: 1\ngrid:\n  batch_size: [1, 2]\n"))
    directory = create_campaign(campaign, tmp_path / "out", settings=UserSettings())
    return ManifestStore(directory).load()


def finished(entry: ManifestEntry, status: str, error: str | None = None) -> ManifestEntry:
    return entry.model_copy(update={"status": status, "error": error})


def test_sends_each_event_as_json(manifest: Manifest, tmp_path: Path) -> None:
    done, failed = manifest.entries
    problems: list[str] = []
    with webhook_server() as (url, rec):
        with WebhookNotifier(hooks(url), on_problem=problems.append) as notifier:
            notifier.campaign_started(manifest, manifest.entries)
            notifier.experiment_finished(finished(done, "done"), None)
            notifier.experiment_finished(finished(failed, "failed", "BackendError: boom"), None)
            notifier.campaign_finished(RunSummary(campaign_dir=tmp_path, manifest=manifest))
        got = rec.received
    assert problems == []
    assert [r.body["event"] for r in got] == [
        "experiment_done",
        "experiment_failed",
        "campaign_finished",
    ]
    assert all(r.path == SECRET_PATH for r in got)
    assert all(r.headers["Content-Type"] == "application/json" for r in got)
    assert all(r.body["campaign_id"] == manifest.campaign_id for r in got)
    assert got[0].body["experiment_id"] == done.experiment_id
    assert got[0].body["label"] == {"batch_size": 1}
    assert got[1].body["error"] == "BackendError: boom"
    assert got[2].body["counts"] == {
        "pending": 2,
        "running": 0,
        "done": 0,
        "failed": 0,
        "oom": 0,
        "interrupted": 0,
    }
    assert got[2].body["interrupted"] is False
    assert notifier.delivered == 3 and notifier.failed == 0


def test_only_the_chosen_events(manifest: Manifest, tmp_path: Path) -> None:
    with webhook_server() as (url, rec):
        with WebhookNotifier(hooks(url, events=["campaign_finished"])) as notifier:
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
            notifier.campaign_finished(RunSummary(campaign_dir=tmp_path, manifest=manifest))
        assert rec.events() == ["campaign_finished"]


def test_retries_with_backoff_then_delivers(manifest: Manifest) -> None:
    problems: list[str] = []
    with webhook_server(Recorder(statuses=[503, 429])) as (url, rec):
        settings = hooks(url, retries=2)
        with WebhookNotifier(settings, on_problem=problems.append, backoff_s=0.01) as notifier:
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
        assert rec.attempts == 3
        assert rec.events() == ["experiment_done"]
    assert problems == []


def test_gives_up_after_the_retries_naming_only_the_host(manifest: Manifest) -> None:
    problems: list[str] = []
    with webhook_server(Recorder(statuses=[500] * 10)) as (url, rec):
        settings = hooks(url, retries=1)
        with WebhookNotifier(settings, on_problem=problems.append, backoff_s=0.01) as notifier:
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
        assert rec.attempts == 2
    assert notifier.failed == 1
    assert problems == [f"webhook 1 ({url}) failed after 2 attempts: HTTP 500"]
    assert "secret" not in problems[0]


def test_a_client_error_is_not_retried(manifest: Manifest) -> None:
    problems: list[str] = []
    with webhook_server(Recorder(statuses=[404])) as (url, rec):
        with WebhookNotifier(hooks(url), on_problem=problems.append, backoff_s=0.01) as notifier:
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
        assert rec.attempts == 1
    assert problems == [f"webhook 1 ({url}) failed after 1 attempt: HTTP 404"]


def test_a_dead_endpoint_is_reported_without_the_url(manifest: Manifest) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    problems: list[str] = []
    url = f"http://127.0.0.1:{port}"
    with WebhookNotifier(hooks(url, retries=1), on_problem=problems.append, backoff_s=0.01) as n:
        n.experiment_finished(finished(manifest.entries[0], "done"), None)
    assert problems == [f"webhook 1 ({url}) failed after 2 attempts: Connection refused"]


def test_a_slow_endpoint_never_blocks_the_caller(manifest: Manifest) -> None:
    """Every event returns while the endpoint has not answered a single request: were a
    callback to wait for the POST, this test would hang (pytest-timeout) instead of reaching
    the release."""
    recorder = Recorder()
    recorder.hold.set()
    with webhook_server(recorder) as (url, rec):
        with WebhookNotifier(hooks(url, timeout_s=30), backoff_s=0.01) as notifier:
            for entry in manifest.entries * 5:
                notifier.experiment_finished(finished(entry, "done"), None)
            assert rec.received == []  # nothing answered yet, and we are already here
            rec.release.set()
        assert len(rec.received) == 10


def test_leaving_gives_up_on_an_endpoint_that_never_answers(manifest: Manifest) -> None:
    recorder = Recorder()
    recorder.hold.set()
    problems: list[str] = []
    with webhook_server(recorder) as (url, _rec):
        settings = hooks(url, timeout_s=0.2, retries=0)
        with WebhookNotifier(settings, on_problem=problems.append, drain_s=0.5) as notifier:
            for entry in manifest.entries * 3:
                notifier.experiment_finished(finished(entry, "done"), None)
    assert any("gave up waiting after 0.5 s" in p for p in problems), problems
    assert all("secret" not in p for p in problems)


def test_a_full_queue_drops_and_says_so(manifest: Manifest) -> None:
    recorder = Recorder()
    recorder.hold.set()
    problems: list[str] = []
    with (
        webhook_server(recorder) as (url, rec),
        WebhookNotifier(hooks(url, timeout_s=30), on_problem=problems.append) as notifier,
    ):
        for _ in range(QUEUE_SIZE + 20):
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
        rec.release.set()
    assert notifier.dropped >= 19  # one may already be in flight
    assert any(f"{notifier.dropped} notification(s) dropped" in p for p in problems)


class Listener(Events):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def notice(self, message: str) -> None:
        self.calls.append(f"notice {message}")

    def waiting(self, entry: ManifestEntry, reason: str, remaining_s: float) -> None:
        self.calls.append(f"waiting {reason}")

    def campaign_started(self, manifest: Manifest, to_run: list[ManifestEntry]) -> None:
        self.calls.append("started")

    def experiment_started(self, entry: ManifestEntry) -> None:
        self.calls.append(f"start {entry.cycle}")

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        self.calls.append(f"finish {entry.cycle}")


def test_broadcast_calls_every_listener_in_order(manifest: Manifest) -> None:
    first, second = Listener(), Listener()
    both = Broadcast(first, second)
    entry = manifest.entries[0]
    both.notice("n")
    both.campaign_started(manifest, [])
    both.waiting(entry, "gap", 1.0)
    both.experiment_started(entry)
    both.experiment_finished(entry, None)
    expected = ["notice n", "started", "waiting gap", "start 1", "finish 1"]
    assert first.calls == second.calls == expected


def test_user_and_password_in_the_url_are_sent_as_basic_auth(manifest: Manifest) -> None:
    """Issue 27.11: http://user:pass@host/... is delivered (urllib alone refuses it), with the
    credentials as an Authorization header, not in the request line."""
    with webhook_server() as (url, rec):
        login = url.replace("http://", "http://hook%40user:p%3Ass@")
        with WebhookNotifier(hooks(login)) as notifier:
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
        got = rec.received
    assert notifier.delivered == 1 and [r.path for r in got] == [SECRET_PATH]
    assert (
        got[0].headers["Authorization"] == "Basic " + base64.b64encode(b"hook@user:p:ss").decode()
    )


def test_two_urls_on_one_host_are_told_apart_without_the_secret(manifest: Manifest) -> None:
    problems: list[str] = []
    with webhook_server(Recorder(statuses=[200, 404])) as (url, rec):
        paths = ["/a/secret-one", "/b/secret-two"]
        settings = WebhookSettings.model_validate(
            {"urls": [SecretStr(url + p) for p in paths], "retries": 0}
        )
        with WebhookNotifier(settings, on_problem=problems.append) as notifier:
            notifier.experiment_finished(finished(manifest.entries[0], "done"), None)
        assert [r.path for r in rec.received] == paths[:1]
    assert problems == [f"webhook 2 ({url}) failed after 1 attempt: HTTP 404"]
