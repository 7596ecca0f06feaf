"""A real HTTP endpoint on localhost that records the webhook POSTs it receives.

It answers with the status codes it is told to (one per request, then 200), and can be held:
while `hold` is set, every request waits until it is released, like a slow endpoint.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Recorder:
    statuses: list[int] = field(default_factory=list)
    """Status of each next request (consumed in order); 200 once empty."""
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    hold: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def events(self) -> list[str]:
        return [r.body["event"] for r in self.received]

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        """Block until `count` notifications were accepted (or the timeout passes)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout_s)
        return list(self.received)


@contextmanager
def webhook_server(recorder: Recorder | None = None) -> Iterator[tuple[str, Recorder]]:
    """(base URL http://127.0.0.1:PORT, its Recorder), served until the block ends."""
    rec = recorder or Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if rec.hold.is_set():
                rec.release.wait(timeout=60)
            with rec.arrived:
                rec.attempts += 1
                status = rec.statuses.pop(0) if rec.statuses else 200
                if status == 200:
                    rec.received.append(Received(self.path, dict(self.headers), json.loads(raw)))
                    rec.arrived.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
