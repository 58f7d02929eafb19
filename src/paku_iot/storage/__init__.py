"""Persistence: SQLite (embedded default) or PostgreSQL, through SQLAlchemy Core; schema
migrations with Alembic live in `storage.migrate`, imported only where they run."""

from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.engine import create_engine, ping, transaction
from paku_iot.storage.messages import MessageStore, write_batch
from paku_iot.storage.records import (
    DeviceRecord,
    EventRecord,
    IngestBatch,
    NewDevice,
    RejectedRecord,
    StateReport,
    TelemetryRecord,
)
from paku_iot.storage.schema_version import require_current_schema

__all__ = [
    "DeviceRecord",
    "DeviceStore",
    "EventRecord",
    "IngestBatch",
    "MessageStore",
    "NewDevice",
    "RejectedRecord",
    "StateReport",
    "TelemetryRecord",
    "create_engine",
    "ping",
    "require_current_schema",
    "transaction",
    "write_batch",
]
