"""The device's two firmware slots and the confirmation of a new image: the reference for
what ESP-IDF's A/B OTA partitions with app rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE)
make firmware do.

1. After `installed` the device restarts into the new image, which runs in *pending verify*
   (ESP_OTA_IMG_PENDING_VERIFY): the previous image stays in the other slot.
2. Its first healthy run (connected to the broker, a telemetry message PUBACKed) within the
   confirmation window makes it valid (`esp_ota_mark_app_valid_cancel_rollback`): report
   `confirmed`.
3. If the window passes first, or the image crashes, the device goes back to the previous
   image (`esp_ota_mark_app_invalid_rollback_and_reboot`, or the bootloader after a crash)
   and, running it, reports `rolled_back` with `runningVersion` = the version returned to.
4. The `ota.boot_previous` command does step 3 on demand, from a confirmed image too.

A version left by a rollback is not installed again, whatever the manifest offers (ESP-IDF
marks its slot invalid): only a newer release is taken. Its slot is no longer bootable, so
there is no previous image to boot until the next update.

The watch runs while the device means to be online: `disconnect()` and `drop()` stop it, and
the next `connect()` while still pending verify starts a fresh window. (On ESP-IDF a reset
while pending verify rolls back instead: the bootloader finds the image aborted. Tests
reconnect a device at will, so the reference device does not count a reconnect as a reset.)

The reports of steps 2 and 3 are kept until sent: one that could not go out (the link was
down) goes at the next connect, with the time it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from paku_iot.device.commands import CommandError
from paku_iot.device.messages import now_ms
from paku_iot.protocol import OTA_CONFIRM_WINDOW_S, OTA_EVENT, OTA_RUNNING_VERSION

if TYPE_CHECKING:
    from paku_iot.device.client import ReferenceDevice

log = logging.getLogger("paku_iot.device.ota")

BuildFault = Literal["crash", "unhealthy"]
"""A test hook's bad build: `crash` dies before it connects (the bootloader goes back at
once); `unhealthy` runs but never has a healthy run, so the window passes."""

# How long the boot_previous command's answer is given to leave before the restart.
_ANSWER_GRACE_S = 5.0


class NoPreviousImage(CommandError):
    """There is no valid image in the other slot to go back to."""


@dataclass(slots=True)
class FirmwareSlots:
    """What the partition table says, besides the running version (the device's
    `fw_version`)."""

    previous: str | None = None  # the valid image in the other slot, if any
    pending: str | None = None  # the running version, while it awaits confirmation
    rejected: set[str] = field(default_factory=set)  # left by a rollback: never again
    confirmations: int = 0
    rollbacks: int = 0


class FirmwareKeeper:
    """A `ReferenceDevice`'s slots, its confirmation watch and its rollback.

    `reports` lists the `confirmed` and `rolled_back` reports sent. `fault` (a test hook,
    see `BuildFault`) makes every new image booted from then on a bad build."""

    def __init__(
        self, device: ReferenceDevice, confirm_window_s: float = OTA_CONFIRM_WINDOW_S
    ) -> None:
        if confirm_window_s <= 0:
            raise ValueError("the confirmation window must be positive")
        self.device = device
        self.window_s = confirm_window_s
        self.slots = FirmwareSlots()
        self.fault: BuildFault | None = None
        self.reports: list[dict[str, Any]] = []
        self._unsent: list[dict[str, Any]] = []
        # One sender at a time, so a report is never sent twice.
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None

    @property
    def pending_verify(self) -> bool:
        return self.slots.pending is not None

    def refuses(self, version: str) -> bool:
        """True for a version this device rolled back from."""
        return version in self.slots.rejected

    # ---- booting ----------------------------------------------------------------------

    async def boot_new(self, version: str) -> None:
        """Restart into the image just installed, in pending verify."""
        left = self.device.fw_version
        if self.fault == "crash":
            # It never gets as far as connecting: the bootloader finds the pending image
            # aborted and boots the other slot, where the old version still is.
            log.warning("%s: firmware %s crashed on start", self.device.device_id, version)
            await self.device.disconnect()
            self.slots.rejected.add(version)
            self.slots.rollbacks += 1
            self._queue(version, "rolled_back", running=left, error="crashed on start")
            await self.device.connect()
            await self._flush()
            return
        self.slots.previous, self.slots.pending = left, version
        await self.device.restart(fw_version=version)  # connected() starts the watch

    async def roll_back(self, reason: str) -> tuple[str, str]:
        """Go back to the previous image and report it; returns (version left, version now
        running). Raises NoPreviousImage when the other slot holds nothing bootable."""
        back = self.slots.previous
        left = self.device.fw_version
        if back is None:
            raise NoPreviousImage(f"no previous image to boot: {left} is the only valid one")
        # The slot left is marked invalid, so it is neither booted nor installed again.
        self.slots.previous, self.slots.pending = None, None
        self.slots.rejected.add(left)
        self.slots.rollbacks += 1
        log.warning("%s: rolling back from %s to %s: %s", self.device.device_id, left, back, reason)
        # Kept before the restart: if the old image cannot reach the broker, the next connect
        # sends it.
        self._queue(left, "rolled_back", running=back, error=reason)
        await self.device.restart(fw_version=back)
        await self._flush()
        return left, back

    async def boot_previous_command(self, _params: dict[str, Any]) -> dict[str, Any]:
        """`ota.boot_previous`: answer first, then restart into the previous image (a device
        restarting inside the handler would never send the answer, and get it again)."""
        back = self.slots.previous
        left = self.device.fw_version
        if back is None:
            raise NoPreviousImage(f"no previous image to boot: {left} is the only valid one")
        self._spawn(self._boot_previous_after_answer())
        return {"from": left, "to": back}

    async def _boot_previous_after_answer(self) -> None:
        await self.device.downlink_settled(_ANSWER_GRACE_S)
        try:
            await self.roll_back("ota.boot_previous command")
        except (NoPreviousImage, ConnectionError) as exc:
            log.error("%s: boot previous: %s", self.device.device_id, exc)

    # ---- the watch --------------------------------------------------------------------

    def connected(self) -> None:
        """Called by the device after each connect: send what is unsent, and watch an image
        in pending verify (a fresh window, as after a restart)."""
        if self._unsent:
            self._spawn(self._flush())
        if self.slots.pending is not None and (self._watch is None or self._watch.done()):
            # The PUBACKs counted so far are not this run's: only later ones confirm it.
            baseline = self.device.telemetry_acknowledged
            self._watch = self._spawn(self._confirm_or_roll_back(self.slots.pending, baseline))

    async def stop(self) -> None:
        """Stop the watch and unsent reports (the device disconnects); never the caller's own
        task (a rollback restarts the device from inside it)."""
        current = asyncio.current_task()
        tasks = {task for task in self._tasks if task is not current and not task.done()}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _confirm_or_roll_back(self, version: str, baseline: int) -> None:
        device = self.device

        def healthy() -> bool:
            return (
                self.fault is None and device.connected and device.telemetry_acknowledged > baseline
            )

        try:
            await device.wait_for(healthy, timeout=self.window_s)
        except TimeoutError:
            try:
                await self.roll_back(f"no healthy run within {self.window_s:g} s")
            except ConnectionError as exc:  # back on the old image, but offline: sent later
                log.error("%s: after rolling back: %s", device.device_id, exc)
            return
        self.slots.pending = None
        self.slots.confirmations += 1
        log.info("%s: firmware %s confirmed", device.device_id, version)
        await self._report(version, "confirmed")

    # ---- reports ----------------------------------------------------------------------

    async def _report(
        self, version: str, status: str, *, running: str | None = None, error: str | None = None
    ) -> None:
        self._queue(version, status, running=running, error=error)
        await self._flush()

    def _queue(
        self, version: str, status: str, *, running: str | None = None, error: str | None = None
    ) -> None:
        document: dict[str, Any] = {"version": version, "status": status, "ts": now_ms()}
        if running is not None:
            document[OTA_RUNNING_VERSION] = running
        if error is not None:
            document["error"] = error[:1000]
        self._unsent.append(document)

    async def _flush(self) -> None:
        async with self._flush_lock:
            await self._send_unsent()

    async def _send_unsent(self) -> None:
        while self._unsent:
            document = self._unsent[0]
            try:
                sent = await self.device.send_event(OTA_EVENT, document)
            except (ConnectionError, TimeoutError) as exc:
                log.warning(
                    "%s: OTA report %s kept for the next connect: %s",
                    self.device.device_id,
                    document["status"],
                    exc,
                )
                return
            self._unsent.pop(0)
            self.reports.append(sent)
            self.device.notify_change()

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
