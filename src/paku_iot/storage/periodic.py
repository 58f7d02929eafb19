"""A periodic pass over the database that outlives its failures: the command sweeper and the
OTA autopilot run one each, beside the collector."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from paku_iot.exceptions import PakuError
from paku_iot.storage.engine import is_unavailable_error


async def repeat(
    step: Callable[[], Awaitable[object]], interval_s: float, what: str, log: logging.Logger
) -> None:
    """Run `step`, then again every `interval_s`, for as long as the task lives. The database
    being away is expected (it comes back): said at DEBUG; anything else is logged with its
    traceback. Either way the next pass comes."""
    while True:
        try:
            await step()
        except PakuError as exc:
            log.debug("%s skipped: %s", what, exc.message)
        except Exception as exc:
            if not is_unavailable_error(exc):
                log.exception("%s failed", what)
        await asyncio.sleep(interval_s)
