"""The periodic pass that keeps command status true without anyone asking: it expires what
ran out of time and sends what waits for a device that is online now."""

from __future__ import annotations

import asyncio
import logging

from paku_iot.downlink.commands import CommandService
from paku_iot.exceptions import PakuError
from paku_iot.storage.engine import is_unavailable_error

log = logging.getLogger("paku_iot.downlink")


async def sweep_forever(commands: CommandService, interval_s: float = 1.0) -> None:
    while True:
        try:
            await commands.expire()
            await commands.dispatch()
        except PakuError as exc:
            log.debug("command sweep skipped: %s", exc.message)
        except Exception as exc:
            if not is_unavailable_error(exc):
                log.exception("command sweep failed")
        await asyncio.sleep(interval_s)
