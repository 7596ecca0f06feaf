"""Several Events listeners as one: the console display and webhooks watch the same campaign."""

from __future__ import annotations

from llenergymeasure.orchestrator.campaign import Events
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.results.schema import ExperimentResult


class Broadcast(Events):
    """Calls each listener in turn with every event (a new Events callback is added here too)."""

    def __init__(self, *listeners: Events) -> None:
        self.listeners = listeners

    def notice(self, message: str) -> None:
        for listener in self.listeners:
            listener.notice(message)

    def waiting(self, entry: ManifestEntry, reason: str, remaining_s: float) -> None:
        for listener in self.listeners:
            listener.waiting(entry, reason, remaining_s)

    def campaign_started(self, manifest: Manifest, to_run: list[ManifestEntry]) -> None:
        for listener in self.listeners:
            listener.campaign_started(manifest, to_run)

    def experiment_started(self, entry: ManifestEntry) -> None:
        for listener in self.listeners:
            listener.experiment_started(entry)

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        for listener in self.listeners:
            listener.experiment_finished(entry, result)

    def experiment_retried(self, entry: ManifestEntry, attempt: int, of: int) -> None:
        for listener in self.listeners:
            listener.experiment_retried(entry, attempt, of)
