"""Prometheus metrics of one paku-iot process (GET /metrics).

Counters that the hot path already keeps (IngestStats) are read at scrape time rather than
mirrored message by message; histograms are observed once per batch or request. Each
service has its own registry: nothing global, nothing built at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paku_iot.alerts.stats import AlertStats
from paku_iot.collector.spooled import SpoolStatus
from paku_iot.collector.stats import IngestStats


@dataclass(slots=True)
class Snapshot:
    """Values read from the database just before a scrape."""

    devices_online: int = 0
    devices_total: int = 0
    commands_by_status: dict[str, int] = field(default_factory=dict)
    alerts_open: int = 0
    alert_deliveries_pending: int = 0


class _StateCollector(Collector):
    def __init__(
        self,
        stats: IngestStats,
        snapshot: Callable[[], Snapshot],
        queue_depth: Callable[[], int],
        broker_connected: Callable[[], bool],
        spool: Callable[[], SpoolStatus | None],
        alerts: AlertStats,
    ) -> None:
        self._stats = stats
        self._alerts = alerts
        self._snapshot = snapshot
        self._queue_depth = queue_depth
        self._broker_connected = broker_connected
        self._spool = spool

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "paku_messages_accepted", "Device messages stored, by kind.", labels=["kind"]
        )
        for kind, count in sorted(self._stats.accepted.items()):
            received.add_metric([kind], count)
        yield received
        rejected = CounterMetricFamily(
            "paku_messages_rejected", "Device messages set aside, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self._stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            "paku_ingest_write_failures",
            "Batch writes that failed and were retried.",
            value=self._stats.write_failures,
        )
        yield CounterMetricFamily(
            "paku_broker_dropped_messages",
            "Messages the broker reports it dropped from a full session queue (acknowledged to "
            "their senders, lost), seen by this process.",
            value=self._stats.broker_dropped,
        )
        yield GaugeMetricFamily(
            "paku_ingest_queue_depth",
            "Messages waiting for the database writer.",
            value=self._queue_depth(),
        )
        yield GaugeMetricFamily(
            "paku_broker_connected",
            "1 when this process's broker connection is up.",
            value=1 if self._broker_connected() else 0,
        )
        yield from self._spool_gauges()
        snapshot = self._snapshot()
        yield GaugeMetricFamily(
            "paku_devices_online", "Devices whose state says online.", value=snapshot.devices_online
        )
        yield GaugeMetricFamily(
            "paku_devices",
            "Devices in the registry, in service (not decommissioned).",
            value=snapshot.devices_total,
        )
        commands = GaugeMetricFamily("paku_commands", "Commands by status.", labels=["status"])
        for status, count in sorted(snapshot.commands_by_status.items()):
            commands.add_metric([status], count)
        yield commands
        yield from self._alert_metrics(snapshot)

    def _alert_metrics(self, snapshot: Snapshot) -> Iterator[Metric]:
        opened = CounterMetricFamily(
            "paku_alerts_opened", "Alerts opened here, by rule kind.", labels=["kind"]
        )
        resolved = CounterMetricFamily(
            "paku_alerts_resolved", "Alerts resolved here, by rule kind.", labels=["kind"]
        )
        for kind, count in sorted(self._alerts.opened.items()):
            opened.add_metric([kind], count)
        for kind, count in sorted(self._alerts.resolved.items()):
            resolved.add_metric([kind], count)
        yield opened
        yield resolved
        deliveries = CounterMetricFamily(
            "paku_alert_deliveries",
            "Notification attempts by this process: delivered, failed (retried), given up.",
            labels=["result"],
        )
        deliveries.add_metric(["delivered"], self._alerts.delivered)
        deliveries.add_metric(["failed"], self._alerts.failed_attempts)
        deliveries.add_metric(["given_up"], self._alerts.given_up)
        yield deliveries
        yield GaugeMetricFamily("paku_alerts_open", "Alerts open.", value=snapshot.alerts_open)
        yield GaugeMetricFamily(
            "paku_alert_deliveries_pending",
            "Notifications waiting to be delivered (in the outbox).",
            value=snapshot.alert_deliveries_pending,
        )
        yield GaugeMetricFamily(
            "paku_alert_transitions_pending",
            "Alert openings and resolutions decided, waiting for the database to record them.",
            value=self._alerts.pending_transitions,
        )

    def _spool_gauges(self) -> Iterator[Metric]:
        spool = self._spool()
        if spool is None:
            return  # no collector in this process
        yield GaugeMetricFamily(
            "paku_spool_bytes", "Disk used by the collector's spool.", value=spool.size_bytes
        )
        yield GaugeMetricFamily(
            "paku_spool_pending_messages",
            "Messages acknowledged (durable in the spool) and not yet in the database.",
            value=spool.pending_messages,
        )
        yield GaugeMetricFamily(
            "paku_spool_oldest_pending_seconds",
            "How long the oldest message not yet in the database has waited in the spool.",
            value=spool.oldest_pending_s,
        )
        yield GaugeMetricFamily(
            "paku_spool_full",
            "1 while the spool is full and the collector does not read from the broker.",
            value=1 if spool.full else 0,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.snapshot = Snapshot()
        self.http_requests = Counter(
            "paku_http_requests",
            "HTTP requests, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "paku_http_request_duration_seconds",
            "HTTP request durations.",
            ["method", "route"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "paku_ingest_batch_size",
            "Messages per database batch.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "paku_ingest_write_seconds",
            "Time to write and commit one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def watch(
        self,
        stats: IngestStats,
        queue_depth: Callable[[], int],
        broker_connected: Callable[[], bool],
        spool: Callable[[], SpoolStatus | None] = lambda: None,
        alerts: AlertStats | None = None,
    ) -> None:
        self.registry.register(
            _StateCollector(
                stats,
                lambda: self.snapshot,
                queue_depth,
                broker_connected,
                spool,
                alerts if alerts is not None else AlertStats(),
            )
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.write_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
