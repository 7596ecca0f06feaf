"""A real HTTP server on 127.0.0.1 that streams OpenAI-style /v1/completions with no model.

For the load generator's own tests and benchmark (issue 15.8): fixed first-token delay, fixed
gap between chunks, usage in the last chunk. `status` != 200 answers every request with an error,
and so does every request after the first `fail_after`. GET /health answers 200, GET /v1/models
lists "standin". Run as a script (`python serving_standin.py PORT [--fail-after N] ...`) it is a
server process to launch.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class StandIn:
    tokens: int = 4
    first_token_s: float = 0.0
    gap_s: float = 0.0
    status: int = 200
    requests: int = 0
    fail_after: int | None = None
    exit_after: int | None = None
    """Run as a script: the process dies (a crashed server) on the request after this many."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /health"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if head.startswith(b"GET /v1/models"):
            listed = b'{"object": "list", "data": [{"id": "standin", "object": "model"}]}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(listed), listed))
            await writer.drain()
            writer.close()
            return
        length = 0
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = json.loads(await reader.readexactly(length)) if length else {}
        self.requests += 1
        if self.exit_after is not None and self.requests > self.exit_after:
            os._exit(3)
        failing = self.fail_after is not None and self.requests > self.fail_after
        if self.status != 200 or failing:
            msg = b'{"error": "stand-in failure"}'
            writer.write(
                f"HTTP/1.1 {500 if failing else self.status} Err\r\nContent-Length: {len(msg)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + msg
            )
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            await asyncio.sleep(self.first_token_s)
            n = min(self.tokens, int(body.get("max_tokens", self.tokens)))
            for i in range(n):
                if i:
                    await asyncio.sleep(self.gap_s)
                chunk = {"choices": [{"index": 0, "text": f" t{i}"}]}
                writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await writer.drain()
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n}}
            writer.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await writer.drain()
        writer.close()


@contextmanager
def standin_server(standin: StandIn) -> Iterator[str]:
    """Serve `standin` on a free 127.0.0.1 port in a thread; yields the base URL; always stops."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Server] = {}

    async def start() -> None:
        holder["s"] = await asyncio.start_server(standin.handle, "127.0.0.1", 0, backlog=1024)
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    ready.wait(10)
    port = holder["s"].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:

        async def stop() -> None:
            holder["s"].close()
            await holder["s"].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--gap-s", type=float, default=0.0)
    parser.add_argument("--first-token-s", type=float, default=0.0)
    parser.add_argument("--fail-after", type=int, default=None)
    parser.add_argument("--exit-after", type=int, default=None)
    args = parser.parse_args()
    standin = StandIn(
        args.tokens,
        args.first_token_s,
        args.gap_s,
        fail_after=args.fail_after,
        exit_after=args.exit_after,
    )

    async def serve() -> None:
        server = await asyncio.start_server(standin.handle, "127.0.0.1", args.port, backlog=1024)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
