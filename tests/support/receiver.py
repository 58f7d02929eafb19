"""A real HTTP receiver for alert delivery tests: an asyncio server on 127.0.0.1 (a port the kernel
picks as it binds, so no other test can take it first) that records each request and answers
with the statuses it is given, then with `default`."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)
    default: int = 200
    delay_s: float = 0.0
    answer: bytes = b"ok"
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            method, path, _version = line.split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                header = (await reader.readline()).decode("latin-1").rstrip("\r\n")
                if not header:
                    break
                name, _, value = header.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(method, path, headers, body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            status = self.statuses.pop(0) if self.statuses else self.default
            location = "Location: /elsewhere\r\n" if 300 <= status < 400 else ""
            writer.write(
                f"HTTP/1.1 {status} Status\r\nContent-Length: {len(self.answer)}\r\n"
                f"{location}Connection: close\r\n\r\n".encode("latin-1")
                + self.answer
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (a timeout test): nothing to answer
        finally:
            writer.close()
            self.tasks.discard(task)  # type: ignore[arg-type]


@asynccontextmanager
async def receiver(
    statuses: list[int] | None = None,
    default: int = 200,
    delay_s: float = 0.0,
    port: int = 0,
    *,
    tls: ssl.SSLContext | None = None,
    host_name: str = "127.0.0.1",
) -> AsyncIterator[Receiver]:
    """Listening until the block ends; on `port` (one a test stops and starts again), or on
    a port the kernel picks. With `tls`, HTTPS with that server context. `host_name` is what
    its URL calls 127.0.0.1."""
    state = Receiver(list(statuses or []), default, delay_s)
    server = await asyncio.start_server(
        state.handle, "127.0.0.1", port, reuse_address=True, ssl=tls
    )
    port = server.sockets[0].getsockname()[1]
    state.url = f"{'https' if tls else 'http'}://{host_name}:{port}/hook"
    try:
        yield state
    finally:
        server.close()
        # A handler still sleeping (a slow receiver) ends with the test, not after it.
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        await server.wait_closed()


@contextmanager
def not_listening() -> Iterator[str]:
    """A URL whose port is bound but not listening: a connection is refused for sure (a
    closed port could be taken by someone else meanwhile; this one stays ours)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()
