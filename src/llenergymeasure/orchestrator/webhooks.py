"""Webhook notifications: a JSON POST when an experiment is done or failed and when a campaign
ends, sent from a background thread so that a slow or dead endpoint never holds up a campaign.

Events only put a message on a bounded queue (a full queue drops it and counts it); one thread
POSTs each message to each URL with a timeout, retrying with exponential backoff on network
errors, 429 and 5xx answers. Leaving the context waits a bounded time for what is queued, then
gives up on the rest and says how many were not delivered. Webhook URLs are secrets: problems
are reported with the URL's host only (see config/settings.py).
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from llenergymeasure.config.settings import WebhookEvent, WebhookSettings, webhook_host
from llenergymeasure.errors import printable
from llenergymeasure.orchestrator.campaign import Events, RunSummary
from llenergymeasure.orchestrator.manifest import Manifest, ManifestEntry
from llenergymeasure.results.schema import ExperimentResult
from llenergymeasure.version import __version__

QUEUE_SIZE = 256
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Problem = Callable[[str], None]


class WebhookNotifier(Events):
    """Events that POST JSON notifications: one listener of the conductor's events, beside
    the CLI's display. Use as a context manager; campaign_finished() is called by whoever ran
    the campaign, with its RunSummary."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        on_problem: Problem | None = None,
        backoff_s: float = BACKOFF_S,
        drain_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.on_problem = on_problem or (lambda _message: None)
        self.backoff_s = backoff_s
        attempts = settings.retries + 1
        backoff_total = sum(min(backoff_s * 2**k, MAX_BACKOFF_S) for k in range(settings.retries))
        self.drain_s = (
            drain_s if drain_s is not None else settings.timeout_s * attempts + backoff_total
        )
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.campaign_id = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._deliver_all, name="lem-webhooks", daemon=True)

    def __enter__(self) -> WebhookNotifier:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait at most drain_s for what is queued; the thread is a daemon, so an endpoint
        that never answers cannot keep the process alive."""
        deadline = time.monotonic() + self.drain_s
        while not self._enqueue_nowait(None):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._stop.set()
            left = self.queue.qsize()
            self.on_problem(
                f"webhooks: gave up waiting after {self.drain_s:g} s; "
                f"{left} notification(s) not sent"
            )
        if self.dropped:
            self.on_problem(
                f"webhooks: {self.dropped} notification(s) dropped (more than {QUEUE_SIZE} "
                "waiting for a slow endpoint)"
            )

    # ----------------------------------------------------------------------- Events callbacks

    def campaign_started(self, manifest: Manifest, to_run: list[ManifestEntry]) -> None:  # noqa: ARG002
        self.campaign_id = manifest.campaign_id

    def experiment_finished(self, entry: ManifestEntry, result: ExperimentResult | None) -> None:
        event: WebhookEvent = "experiment_done" if entry.status == "done" else "experiment_failed"
        payload: dict[str, Any] = {
            "experiment_id": entry.experiment_id,
            "cycle": entry.cycle,
            "status": entry.status,
            "label": entry.label,
            "error": entry.error,
        }
        if result is not None:
            payload |= {
                "output_tokens_per_s": result.output_tokens_per_s,
                "energy_raw_j": result.energy.energy_raw_j,
                "energy_raw_per_output_token_j": result.energy.energy_raw_per_output_token_j,
            }
        self.send(event, payload)

    def campaign_finished(self, summary: RunSummary) -> None:
        self.send(
            "campaign_finished",
            {
                "campaign_dir": str(summary.campaign_dir),
                "counts": summary.manifest.counts(),
                "interrupted": summary.interrupted,
                "failed": [f"{e.experiment_id}/cycle-{e.cycle}" for e in summary.failed],
            },
        )

    # ----------------------------------------------------------------------------- delivery

    def send(self, event: WebhookEvent, fields: dict[str, Any]) -> None:
        """Queue one notification, if the settings ask for this event; never blocks."""
        if event not in self.settings.events:
            return
        payload = {
            "event": event,
            "campaign_id": self.campaign_id or fields.get("campaign_id"),
            "at": datetime.now(timezone.utc).isoformat(),
            "llenergymeasure": __version__,
            **fields,
        }
        if not self._enqueue_nowait(payload):
            self.dropped += 1

    def _enqueue_nowait(self, item: dict[str, Any] | None) -> bool:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _deliver_all(self) -> None:
        while not self._stop.is_set():
            payload = self.queue.get()
            if payload is None:
                return
            body = json.dumps(payload, default=str).encode()
            for i, url in enumerate(self.settings.urls):
                if self._stop.is_set():
                    return
                self._deliver(url, body, f"webhook {i + 1} ({webhook_host(url)})")

    def _deliver(self, url: SecretStr, body: bytes, name: str) -> None:
        """name: the URL's place in the settings and its host, which tell two URLs on one
        host apart without showing the secret (issue 27.11)."""
        attempts = self.settings.retries + 1
        reason = ""
        for attempt in range(attempts):
            if attempt:
                delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                if self._stop.wait(delay):
                    return
            retry, reason = self._post(url, body)
            if not reason:
                self.delivered += 1
                return
            if not retry:
                break
        self.failed += 1
        tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
        self.on_problem(f"{name} failed after {tries}: {reason}")

    def _post(self, url: SecretStr, body: bytes) -> tuple[bool, str]:
        """(retry?, reason) of one POST; reason is empty when it was accepted. Reasons never
        quote the URL."""
        parts = urlsplit(url.get_secret_value())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"llenergymeasure/{__version__}",
        }
        if parts.username is not None:  # user:pass@host: HTTP basic auth, as curl does
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        request = urllib.request.Request(
            urlunsplit(parts), data=body, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                response.read(1024)
        except urllib.error.HTTPError as e:
            return e.code in RETRY_STATUSES, f"HTTP {e.code}"
        except urllib.error.URLError as e:
            return True, self._network_reason(e.reason)
        except (OSError, http.client.HTTPException) as e:
            return True, self._network_reason(e)
        except Exception as e:  # a notification must never take the campaign's output down
            # (http.client's messages may quote the URL: show the kind of error only)
            return False, f"request refused ({type(e).__name__})"
        return False, ""

    def _network_reason(self, reason: object) -> str:
        if isinstance(reason, TimeoutError):
            return f"no answer within {self.settings.timeout_s:g} s"
        if isinstance(reason, OSError) and reason.strerror:
            return printable(reason.strerror, 120)
        return type(reason).__name__
