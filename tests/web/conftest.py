"""The real app on a real socket (uvicorn on a free port, in the test's own event loop): for
the browser tests, and for what only a socket shows (a body that never arrives)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn

from paku_iot.server.service import Service
from paku_iot.web.app import create_app
from tests.support import free_port


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test run owns SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def live_server(service: Service) -> AsyncIterator[str]:
    """The real app on a real socket, served from the test's own event loop."""
    port = free_port()
    server = _Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start in time"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
