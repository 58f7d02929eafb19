"""The composition root: settings -> storage -> broker -> registry and collector.

`running_service` builds everything, starts the background work, and tears it down in the
reverse order. The HTTP app and the CLI receive the finished `Service`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.alerts.engine import AlertEngine
from paku_iot.alerts.outbox import DeliveryWorker
from paku_iot.alerts.rules import AlertRuleService
from paku_iot.alerts.service import AlertService
from paku_iot.alerts.stats import AlertStats
from paku_iot.broker.credentials import PasswordFileSync
from paku_iot.broker.files import BROKER_DROPPED_TOPIC, BrokerPaths
from paku_iot.broker.link import BrokerLink, LinkOptions, shared_group_name
from paku_iot.collector.broker_drops import BrokerDropWatch
from paku_iot.collector.intake import Intake
from paku_iot.collector.spool import Position
from paku_iot.collector.spooled import SpooledCollector, SpoolStatus
from paku_iot.collector.stats import IngestStats
from paku_iot.collector.writer import BatchWriter
from paku_iot.downlink.commands import CommandService
from paku_iot.downlink.config import ConfigService
from paku_iot.downlink.sweeper import sweep_forever
from paku_iot.exceptions import PakuError, SettingsError
from paku_iot.ota.parts import OtaParts
from paku_iot.protocol import uplink_subscriptions
from paku_iot.registry.devices import DeviceRegistry
from paku_iot.registry.history import DeviceHistory
from paku_iot.secretfiles import read_or_create_secret
from paku_iot.security.audit import AuditLog
from paku_iot.security.claims import FailureLimiter
from paku_iot.security.onboarding import Onboarding
from paku_iot.security.sessions import DashboardSessions
from paku_iot.security.tokens import AdminTokens
from paku_iot.server.legacy_session import empty_legacy_session, legacy_client_id
from paku_iot.server.tasks import TaskSet
from paku_iot.settings import Settings
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.commands import CommandStore
from paku_iot.storage.configs import ConfigStore
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.engine import create_engine, ping
from paku_iot.storage.exports import ExportStore
from paku_iot.storage.messages import MessageStore
from paku_iot.storage.records import IngestBatch
from paku_iot.storage.retention import RetentionPolicy, maintain_forever
from paku_iot.storage.schema_version import require_current_schema
from paku_iot.storage.security import (
    AuditStore,
    ClaimCodeStore,
    ClaimFailureStore,
    SessionStore,
    TokenStore,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from paku_iot.ota.releases import ReleaseService
    from paku_iot.server.metrics import Metrics

log = logging.getLogger("paku_iot")


class Role(StrEnum):
    API = "api"
    COLLECTOR = "collector"


ALL_ROLES = frozenset(Role)


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: str  # ok | degraded | unavailable
    components: dict[str, str]
    details: dict[str, str]


@dataclass(slots=True)
class Service:
    """The running system as routes and commands see it: the settings and the domain
    services. Below them, the server's own parts (stores, broker link, collector) serve
    health and metrics; routes do not reach past the services to them."""

    settings: Settings
    # The domain services.
    registry: DeviceRegistry
    history: DeviceHistory
    commands: CommandService
    configs: ConfigService
    ota: OtaParts
    tokens: AdminTokens
    audit: AuditLog
    onboarding: Onboarding
    claim_limiter: FailureLimiter
    dashboard_sessions: DashboardSessions
    alert_rules: AlertRuleService
    alerts: AlertService
    # The bootstrap admin token (PAKU_ADMIN_TOKEN or the data dir's token file).
    admin_token: str
    # The server's own parts.
    engine: AsyncEngine
    device_store: DeviceStore
    command_store: CommandStore
    link: BrokerLink
    # Built on first use (and at start when serving the API): a collector alone has no
    # endpoint to expose metrics on, and leaves prometheus_client unloaded.
    metrics_source: Callable[[], Metrics]
    stats: IngestStats = field(default_factory=IngestStats)
    alert_stats: AlertStats = field(default_factory=AlertStats)
    writer: BatchWriter[Position] | None = None
    broker_drops: BrokerDropWatch | None = None
    spooled: SpooledCollector | None = None

    @property
    def metrics(self) -> Metrics:
        return self.metrics_source()

    @property
    def releases(self) -> ReleaseService:
        return self.ota.releases()

    @property
    def ota_public_key(self) -> Ed25519PublicKey:
        """The key devices pin: the public half of the signing key, or
        PAKU_OTA_PUBLIC_KEY_FILE on a server that signs nothing itself."""
        return self.ota.signer().public_key

    async def refresh_metrics(self) -> None:
        """Read the database-backed gauges just before a scrape."""
        try:
            total, online = await self.device_store.counts()
            by_status = await self.command_store.counts_by_status()
            alerts_open, deliveries_pending = await self.alerts.counts()
        except PakuError:
            return  # the last values stand; /health tells that the database is down
        self.metrics.snapshot.devices_total = total
        self.metrics.snapshot.devices_online = online
        self.metrics.snapshot.commands_by_status = by_status
        self.metrics.snapshot.alerts_open = alerts_open
        self.metrics.snapshot.alert_deliveries_pending = deliveries_pending

    async def health(self) -> HealthReport:
        components: dict[str, str] = {}
        details: dict[str, str] = {}
        try:
            await ping(self.engine)
            components["database"] = "ok"
        except PakuError as exc:
            components["database"] = "unavailable"
            details["database"] = exc.message
        if self.link.ready:
            components["broker"] = "ok"
        else:
            components["broker"] = "unavailable"
            details["broker"] = self.link.last_error or "not connected"
        if self.writer is not None:
            reasons = [self.stats.degraded_reason]
            if self.broker_drops is not None:
                reasons.append(self.broker_drops.degraded_reason())
            if self.spooled is not None:
                reasons.append(self.spooled.degraded_reason())
            given = [reason for reason in reasons if reason]
            if given:
                components["collector"] = "degraded"
                details["collector"] = "; ".join(given)
            else:
                components["collector"] = "ok"
        if "unavailable" in components.values():
            status = "unavailable"
        elif "degraded" in components.values():
            status = "degraded"
        else:
            status = "ok"
        return HealthReport(status, components, details)


def admin_token(settings: Settings) -> str:
    """The bootstrap admin token: PAKU_ADMIN_TOKEN, or the one generated at first run."""
    if settings.admin_token:
        return settings.admin_token
    return read_or_create_secret(settings.admin_token_file)


def backend_mqtt_password(settings: Settings) -> str:
    if settings.mqtt_password:
        return settings.mqtt_password
    if settings.broker_dir is not None:
        path = BrokerPaths(settings.broker_dir).backend_password
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
        raise SettingsError(
            f"no backend broker password at {path}: run `paku-iot broker-config --out "
            f"{settings.broker_dir}` first, or set PAKU_MQTT_PASSWORD"
        )
    raise SettingsError(
        "set PAKU_MQTT_PASSWORD, or PAKU_BROKER_DIR for a broker paku-iot configured"
    )


@asynccontextmanager
async def running_service(
    settings: Settings, roles: frozenset[Role] = ALL_ROLES
) -> AsyncIterator[Service]:
    async with AsyncExitStack() as stack:
        engine = create_engine(settings.resolved_database_url)
        stack.push_async_callback(engine.dispose)
        await require_current_schema(engine)

        devices = DeviceStore(engine)
        password = backend_mqtt_password(settings)
        broker_sync = None
        if settings.broker_dir is not None and Role.API in roles:
            broker_sync = _password_file_sync(settings, devices)
            # Whatever changed while we were down, the broker sees the registry as it is now.
            await broker_sync.sync()

        stats = IngestStats()
        collecting = Role.COLLECTOR in roles
        # Built first: the intake sends PUBACKs and pauses reading through the link, commands
        # publish through it. It is handed the intake (its handler) when it starts, below.
        link, drop_watch = _backend_link(settings, password, stats, collecting=collecting)
        command_store = CommandStore(engine)
        commands = CommandService(command_store, devices, link)
        background = TaskSet()
        # Serving the API, the metrics are built now and the writer reports every batch to
        # them. A collector alone has no endpoint to expose them on and leaves
        # prometheus_client unloaded; metrics built there on demand see no batches.
        batch_metrics = _new_metrics() if Role.API in roles else None
        # Alerting runs beside the collector: it is fed every committed batch, in memory.
        alert_store = AlertStore(engine)
        alert_stats = AlertStats()
        alerting = _alerting(alert_store, devices, alert_stats) if collecting else None
        spooled = (
            _spooled_collector(
                settings,
                engine,
                stats,
                link,
                # Devices that just came online get their queued commands.
                on_online=lambda ids: background.spawn_each(commands.dispatch, ids),
                observe_batch=batch_metrics.observe_batch if batch_metrics else None,
                on_batch=alerting[0].observe if alerting else None,
            )
            if collecting
            else None
        )
        if spooled is not None:
            # Closed (drained for a bounded time) after the link has disconnected, below.
            stack.push_async_callback(spooled.close)
        writer = spooled.writer if spooled is not None else None
        metrics = _metrics_source(batch_metrics, stats, spooled, link, alert_stats)
        if Role.API in roles:
            metrics()
        ota = OtaParts(settings, engine, devices)
        if Role.API in roles:
            ota.releases()  # the signing key exists (or fails) at start, not at first use
        bootstrap_token = admin_token(settings)
        registry = DeviceRegistry(devices, broker_sync, link)
        service = Service(
            settings=settings,
            registry=registry,
            history=DeviceHistory(MessageStore(engine), ExportStore(engine)),
            commands=commands,
            configs=ConfigService(ConfigStore(engine), link),
            ota=ota,
            tokens=AdminTokens(TokenStore(engine), bootstrap_token),
            audit=AuditLog(AuditStore(engine)),
            onboarding=Onboarding(devices, ClaimCodeStore(engine), registry),
            claim_limiter=FailureLimiter(ClaimFailureStore(engine)),
            dashboard_sessions=DashboardSessions(SessionStore(engine)),
            alert_rules=AlertRuleService(alert_store, devices),
            alerts=AlertService(alert_store),
            admin_token=bootstrap_token,
            engine=engine,
            device_store=devices,
            command_store=command_store,
            link=link,
            metrics_source=metrics,
            stats=stats,
            alert_stats=alert_stats,
            writer=writer,
            broker_drops=drop_watch,
            spooled=spooled,
        )

        if spooled is not None:
            # What an earlier run left in the spool is drained first (it was acknowledged).
            spooled.start()
        link.start(spooled.intake.handle if spooled is not None else None)
        if collecting:
            background.spawn(
                _empty_legacy_session(settings, engine, stats, password, commands, background),
                name="legacy-session",
            )
        background.spawn(sweep_forever(commands), name="command-sweeper")
        if alerting is not None:
            for name, work in (("alerting", alerting[0].run()), ("deliveries", alerting[1].run())):
                background.spawn(work, name=name)
        if writer is not None:
            _spawn_upkeep(background, settings, engine, ota)
        stack.push_async_callback(background.cancel_all)
        stack.push_async_callback(link.stop)
        if spooled is not None:
            # First at shutdown: stop reading, and PUBACK what is spooled before disconnecting.
            stack.push_async_callback(spooled.stop_intake)
        yield service


def _spawn_upkeep(
    background: TaskSet, settings: Settings, engine: AsyncEngine, ota: OtaParts
) -> None:
    """A collector's periodic work: the OTA autopilot, beside the collector whose reports it
    reads (ota/autopilot.py), and retention."""
    if settings.ota_autopilot_interval_s > 0:
        background.spawn(
            ota.autopilot().run(settings.ota_autopilot_interval_s), name="ota-autopilot"
        )
    policy = RetentionPolicy(settings.telemetry_retention_days, settings.events_retention_days)
    background.spawn(
        maintain_forever(engine, policy, settings.maintenance_interval_s), name="maintenance"
    )


def _alerting(
    store: AlertStore, devices: DeviceStore, stats: AlertStats
) -> tuple[AlertEngine, DeliveryWorker]:
    """The evaluator's engine (fed by the writer) and the outbox's worker it wakes."""
    outbox = DeliveryWorker(store, devices, stats)
    return AlertEngine(store, devices, stats, on_recorded=outbox.wake), outbox


def _new_metrics() -> Metrics:
    from paku_iot.server.metrics import Metrics  # noqa: PLC0415 - see running_service

    return Metrics()


def _metrics_source(
    built: Metrics | None,
    stats: IngestStats,
    spooled: SpooledCollector | None,
    link: BrokerLink,
    alert_stats: AlertStats,
) -> Callable[[], Metrics]:
    """The process's metrics (`built`, or new ones on first use), watching the ingest
    counters, the writer's backlog, the spool, the broker connection and alerting."""

    def spool_status() -> SpoolStatus | None:
        return spooled.status() if spooled is not None else None

    @functools.cache
    def source() -> Metrics:
        metrics = built if built is not None else _new_metrics()
        metrics.watch(
            stats,
            lambda: spooled.writer.backlog if spooled is not None else 0,
            lambda: link.connected,
            spool_status,
            alert_stats,
        )
        return metrics

    return source


def _password_file_sync(settings: Settings, devices: DeviceStore) -> PasswordFileSync:
    assert settings.broker_dir is not None
    paths = BrokerPaths(settings.broker_dir)
    return PasswordFileSync(
        password_file=paths.password_file,
        pid_file=paths.pid_file,
        device_credentials=devices.credentials,
    )


def _spooled_collector(
    settings: Settings,
    engine: AsyncEngine,
    stats: IngestStats,
    link: BrokerLink,
    *,
    on_online: Callable[[set[str]], None],
    observe_batch: Callable[[int, float], None] | None,
    on_batch: Callable[[IngestBatch], None] | None,
) -> SpooledCollector:
    """The collector: broker -> spool -> database (collector/spooled.py)."""
    writer: BatchWriter[Position] = BatchWriter(
        engine,
        stats,
        batch_size=settings.ingest_batch_size,
        linger_s=settings.ingest_linger_ms / 1000,
        on_online=on_online,
        observe_batch=observe_batch,
        on_batch=on_batch,
    )
    return SpooledCollector.open(
        settings.resolved_spool_dir,
        settings.spool_max_bytes,
        writer,
        link,
        max_payload_bytes=settings.max_payload_bytes,
        max_backlog=settings.ingest_queue_size,
        read_size=settings.ingest_batch_size,
    )


def _collector_parts(
    settings: Settings,
    engine: AsyncEngine,
    stats: IngestStats,
    link: BrokerLink,
    roles: frozenset[Role],
    *,
    on_online: Callable[[set[str]], None],
    observe_batch: Callable[[int, float], None] | None,
) -> tuple[BatchWriter[int] | None, Intake | None]:
    """The legacy session's collector, which acknowledges at database commit: it only
    empties a session the broker already holds (server/legacy_session.py)."""
    if Role.COLLECTOR not in roles:
        return None, None
    writer: BatchWriter[int] = BatchWriter(
        engine,
        stats,
        batch_size=settings.ingest_batch_size,
        linger_s=settings.ingest_linger_ms / 1000,
        on_online=on_online,
        observe_batch=observe_batch,
    )
    intake = Intake(
        writer,
        link,
        max_payload_bytes=settings.max_payload_bytes,
        max_in_flight=settings.ingest_queue_size,
    )
    return writer, intake


async def _empty_legacy_session(
    settings: Settings,
    engine: AsyncEngine,
    stats: IngestStats,
    password: str,
    commands: CommandService,
    background: TaskSet,
) -> None:
    """See `legacy_session`: what the broker queued under the collector's former id."""
    options = LinkOptions(
        host=settings.mqtt_host,
        port=settings.mqtt_backend_port,
        username=settings.mqtt_username,
        password=password,
        client_id=legacy_client_id(settings.broker_session_name),
        persistent_session=True,
    )

    def parts(link: BrokerLink) -> tuple[BatchWriter[int], Intake]:
        writer, intake = _collector_parts(
            settings,
            engine,
            stats,
            link,
            frozenset({Role.COLLECTOR}),
            on_online=lambda ids: background.spawn_each(commands.dispatch, ids),
            observe_batch=None,
        )
        assert writer is not None
        assert intake is not None
        return writer, intake

    await empty_legacy_session(options, parts)


def backend_client_id(role: str, session_name: str) -> str:
    """The backend's client ids hold a dot, which no device id can: a device never names a
    backend session, whichever listener it reaches."""
    return f"paku.{role}.{session_name}"


def _backend_link(
    settings: Settings, password: str, stats: IngestStats, *, collecting: bool
) -> tuple[BrokerLink, BrokerDropWatch | None]:
    """The process's broker link, and for a collector the watch on what the broker drops."""
    link = _broker_link(settings, password, collecting=collecting)
    if not collecting:
        return link, None
    drop_watch = BrokerDropWatch(stats)
    link.watch_broker(drop_watch)
    return link, drop_watch


def _broker_link(settings: Settings, password: str, *, collecting: bool) -> BrokerLink:
    """The collector's link keeps a persistent session with the uplink subscriptions (shared
    between replicas when configured); an API-only process gets a plain one to publish
    downlink messages."""
    client_role = "collector" if collecting else "api"
    return BrokerLink(
        LinkOptions(
            host=settings.mqtt_host,
            port=settings.mqtt_backend_port,
            username=settings.mqtt_username,
            password=password,
            client_id=backend_client_id(client_role, settings.broker_session_name),
            persistent_session=collecting,
            subscriptions=tuple(uplink_subscriptions()) if collecting else (),
            shared_group=shared_group_name(password) if collecting else None,
            share_subscriptions=settings.collector_shared_subscription,
            broker_topics=(BROKER_DROPPED_TOPIC,) if collecting else (),
        )
    )
