"""A real HTTP server on 127.0.0.1 that streams OpenAI-style /v1/completions with no model.

For the load generator's own tests and benchmark (issue 15.8): fixed first-token delay, fixed
gap between chunks, usage in the last chunk. `status` != 200 answers every request with an error,
and so does every request after the first `fail_after`. GET /health answers 200, GET /v1/models
lists "standin". Misbehaviours for the client's robustness (issue 25): every `bad_every`-th
request first gets the `data:` chunk `bad_chunk`; requests after `keepalive_after` get
`: keepalive` lines forever; `trickle_health` answers /health one byte a second, never finishing;
after `hang_after` requests nothing (health included) is answered at all. Run as a script
(`python serving_standin.py PORT [--fail-after N] ...`) it is a server process to launch.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StandIn:
    tokens: int = 4
    first_token_s: float = 0.0
    gap_s: float = 0.0
    status: int = 200
    requests: int = 0
    bodies: list[dict[str, object]] = field(default_factory=list)
    """Every completion request's JSON body, in arrival order."""
    fail_after: int | None = None
    exit_after: int | None = None
    """Run as a script: the process dies (a crashed server) on the request after this many."""
    bad_chunk: str | None = None
    bad_every: int = 0
    keepalive_after: int | None = None
    trickle_health: bool = False
    hang_after: int | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if self.hang_after is not None and self.requests >= self.hang_after:
            await asyncio.sleep(3600)
        if head.startswith(b"GET /health") and self.trickle_health:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while True:
                await writer.drain()
                await asyncio.sleep(1.0)
                writer.write(b" ")
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
        self.bodies.append(body)
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
            if self.keepalive_after is not None and self.requests > self.keepalive_after:
                while True:
                    writer.write(b": keepalive\n\n")
                    await writer.drain()
                    await asyncio.sleep(0.2)
            if self.bad_every and self.requests % self.bad_every == 0:
                writer.write(f"data: {self.bad_chunk}\n\n".encode())
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
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("--port", type=int, dest="port_option")  # as real servers take it
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--gap-s", type=float, default=0.0)
    parser.add_argument("--first-token-s", type=float, default=0.0)
    parser.add_argument("--fail-after", type=int, default=None)
    parser.add_argument("--exit-after", type=int, default=None)
    parser.add_argument("--bad-chunk", default=None)
    parser.add_argument("--bad-every", type=int, default=0)
    parser.add_argument("--keepalive-after", type=int, default=None)
    parser.add_argument("--trickle-health", action="store_true")
    parser.add_argument("--hang-after", type=int, default=None)
    args = parser.parse_args()
    port = args.port if args.port is not None else args.port_option
    standin = StandIn(
        args.tokens,
        args.first_token_s,
        args.gap_s,
        fail_after=args.fail_after,
        exit_after=args.exit_after,
        bad_chunk=args.bad_chunk,
        bad_every=args.bad_every,
        keepalive_after=args.keepalive_after,
        trickle_health=args.trickle_health,
        hang_after=args.hang_after,
    )

    async def serve() -> None:
        server = await asyncio.start_server(standin.handle, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
