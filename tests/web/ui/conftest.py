"""Dashboard fixtures: the real app over HTTP (in process, or a real uvicorn server on a free
port for the browser), and a real Chromium driven by Playwright. Signing in:
tests/support/ui.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import BrowserContext, async_playwright

from paku_iot.server.service import Service
from paku_iot.web.app import create_app
from tests.support import free_port, require
from tests.support.ui import ARTIFACTS

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def ui(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, with no credentials: a browser that has not signed in."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as client:
        yield client


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


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (`make install` puts it there): missing fails in CI, skips locally."""
    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (make install)")
    ARTIFACTS.mkdir(exist_ok=True)
    return str(CHROMIUM)


@pytest.fixture
async def browser_context(chromium: str, live_server: str) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium context (no cookies) whose relative URLs go to the live server."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True)
        context = await browser.new_context(
            base_url=live_server, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()
            await browser.close()
