"""The collector: MQTT intake, parsing of device input, and the batch writer."""

from paku_iot.collector.intake import Intake
from paku_iot.collector.parse import RejectReason, parse_message
from paku_iot.collector.stats import IngestStats
from paku_iot.collector.writer import BatchWriter

__all__ = ["BatchWriter", "IngestStats", "Intake", "RejectReason", "parse_message"]
