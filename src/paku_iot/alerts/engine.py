"""Alerting beside the collector: the evaluator fed with every committed batch and a clock,
its decisions recorded, the rules and the fleet kept current.

The collector's writer calls `observe` after each commit, synchronously and in memory (the
evaluator reads no database): the ingest path gains no query per message. What the evaluator
decides is recorded by `run`, in one transaction per round (alerts and their notifications
together, storage/alerts.py `apply`), then the delivery worker is woken. `run` also ticks the
evaluator every second (silence windows, durations), reloads the rules when they change
(a cheap version read every RULES_POLL_S) and the device -> model and device -> tags maps
while model- or tag-scoped rules exist.

While the database is unavailable the decided transitions wait here and are recorded once
it is back. They live in memory: a collector killed meanwhile forgets them, and the evaluator,
started again from the database (rules, open alerts, last-seen times), decides afresh from
what devices send next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from paku_iot.alerts.evaluate import AlertEvaluator
from paku_iot.alerts.stats import AlertStats
from paku_iot.exceptions import PakuError
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import (
    AlertDestination,
    AlertRuleRecord,
    AlertState,
    AlertTransition,
    IngestBatch,
)

log = logging.getLogger("paku_iot.alerts")

TICK_S = 1.0
RULES_POLL_S = 2.0
MODELS_POLL_S = 5.0
_MAX_ERROR_BACKOFF_S = 10.0


def _now() -> datetime:
    return datetime.now(UTC)


class AlertEngine:
    def __init__(
        self,
        store: AlertStore,
        devices: DeviceStore,
        stats: AlertStats,
        *,
        on_recorded: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._devices = devices
        self._stats = stats
        self._on_recorded = on_recorded  # new notifications are in the outbox
        self._clock = clock
        self._evaluator = AlertEvaluator(())
        self._rules: dict[str, AlertRuleRecord] = {}
        self._rules_version: tuple[int, datetime | None] | None = None
        self._pending: list[AlertTransition] = []
        self._decided = asyncio.Event()
        self._started = False

    def observe(self, batch: IngestBatch) -> None:
        """A batch is committed (the writer's callback). Never raises: a bug here must not
        stop ingest."""
        if not self._started:
            return  # before the rules are loaded there is nothing to evaluate
        try:
            self._decide(self._evaluator.observe(batch, self._clock()))
        except Exception:
            log.exception("alert evaluation of a batch failed")

    async def run(self) -> None:
        """Load, then evaluate and record until cancelled."""
        await self._retrying(self._load)
        self._started = True
        next_tick = next_rules = next_models = time.monotonic()
        while True:
            self._decided.clear()  # before the steps: what they decide sets it again
            now = time.monotonic()
            if now >= next_rules:
                next_rules = now + RULES_POLL_S
                await self._quietly(self._reload_rules_if_changed)
            if now >= next_models and self._has_fleet_rules():
                next_models = now + MODELS_POLL_S
                await self._quietly(self._reload_fleet)
            if now >= next_tick:
                next_tick = now + TICK_S
                self._decide(self._evaluator.tick(self._clock()))
            if self._pending:
                await self._quietly(self._record)
            wait = max(0.0, min(next_tick, next_rules) - time.monotonic())
            if self._pending:
                wait = max(wait, 1.0)  # recording failed: retry at the pace of the tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._decided.wait(), wait)

    # ---- loading ------------------------------------------------------------------------

    async def _load(self) -> None:
        rules = await self._store.enabled_rules()
        self._rules_version = await self._store.rules_version()
        fleet = await self._devices.models_and_last_seen()
        self._rules = {rule.id: rule for rule in rules}
        evaluator = AlertEvaluator(rules, {device: model for device, model, _ in fleet})
        evaluator.set_device_tags(await self._devices.tags_by_device())
        evaluator.load_open((a.rule_id, a.device_id) for a in await self._store.open_alerts())
        evaluator.set_last_seen({device: seen for device, _, seen in fleet if seen is not None})
        self._evaluator = evaluator
        log.info("alerting: %d rules enabled", len(rules))

    async def _reload_rules_if_changed(self) -> None:
        version = await self._store.rules_version()
        if version == self._rules_version:
            return
        rules = await self._store.enabled_rules()
        self._rules = {rule.id: rule for rule in rules}
        if self._has_fleet_rules():
            # A new model or tag rule needs the fleet as it is now, before it is evaluated.
            await self._reload_fleet()
        self._rules_version = version
        self._decide(self._evaluator.set_rules(rules, self._clock()))
        log.info("alerting: rules changed, %d enabled", len(rules))

    async def _reload_fleet(self) -> None:
        """The devices' models and tags, as scoped rules match them."""
        fleet = await self._devices.models_and_last_seen()
        mapping = {device: model for device, model, _ in fleet}
        self._decide(self._evaluator.set_device_models(mapping, self._clock()))
        if any(rule.tag is not None for rule in self._rules.values()):
            tags = await self._devices.tags_by_device()
            self._decide(self._evaluator.set_device_tags(tags, self._clock()))

    def _has_fleet_rules(self) -> bool:
        return any(rule.model is not None or rule.tag is not None for rule in self._rules.values())

    # ---- recording ----------------------------------------------------------------------

    def _decide(self, transitions: list[AlertTransition]) -> None:
        if transitions:
            self._pending.extend(transitions)
            self._stats.pending_transitions = len(self._pending)
            self._decided.set()

    def _destinations(self, rule_id: str) -> tuple[AlertDestination, ...]:
        rule = self._rules.get(rule_id)
        return rule.destinations if rule is not None else ()

    async def _record(self) -> None:
        transitions = self._pending
        self._pending = []
        try:
            changed = await self._store.apply(transitions, self._destinations)
        except BaseException:
            self._pending[:0] = transitions  # kept, in order, for the next round
            self._stats.pending_transitions = len(self._pending)
            raise
        self._stats.pending_transitions = len(self._pending)
        kinds = {rule_id: rule.kind.value for rule_id, rule in self._rules.items()}
        for alert in changed:
            kind = kinds.get(alert.rule_id, "unknown")
            if alert.state is AlertState.OPEN:
                self._stats.opened[kind] += 1
                log.warning(
                    "alert %d opened: %s rule %s on %s %s",
                    alert.id,
                    kind,
                    alert.rule_id,
                    alert.device_id,
                    alert.values,
                )
            else:
                self._stats.resolved[kind] += 1
                log.info("alert %d resolved: %s on %s", alert.id, alert.rule_id, alert.device_id)
        if changed:
            self._on_recorded()

    # ---- errors -------------------------------------------------------------------------

    async def _quietly(self, step: Callable[[], object]) -> None:
        """One step of the loop; a database outage is logged and the loop carries on."""
        try:
            result = step()
            if asyncio.iscoroutine(result):
                await result
        except PakuError as exc:
            log.warning("alerting waits for the database: %s", exc)
        except Exception:
            log.exception("alerting step failed")

    async def _retrying(self, step: Callable[[], object]) -> None:
        delay = 1.0
        while True:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
                return
            except PakuError as exc:
                log.warning("alerting waits for the database: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_ERROR_BACKOFF_S)
