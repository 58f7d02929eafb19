"""The periodic pass that keeps command status true without anyone asking: it expires what
ran out of time and sends what waits for a device that is online now."""

from __future__ import annotations

import logging

from paku_iot.downlink.commands import CommandService
from paku_iot.storage.periodic import repeat

log = logging.getLogger("paku_iot.downlink")


async def sweep_forever(commands: CommandService, interval_s: float = 1.0) -> None:
    async def sweep() -> None:
        await commands.expire()
        await commands.dispatch()

    await repeat(sweep, interval_s, "command sweep", log)
