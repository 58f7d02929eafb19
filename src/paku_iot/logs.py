"""Logging setup, called only from entry points: readable lines in development, one JSON
object per line in production (`PAKU_LOG_FORMAT=json`); and the id of the HTTP request being
served (X-Request-ID), which every line logged while serving it carries."""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

current_request_id: ContextVar[str | None] = ContextVar("paku_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request is being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Context passed with `extra=` (device id, request id) becomes fields of its own.
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: whatever a terminal,
# `less` or a log shipper could take for the end of a line (or use to repaint one).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
TRACEBACK_INDENT = "    "


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_controls(text: str) -> str:
    """`text` on one line: every control character written as its escape (`\\n`, `\\x1b`)."""
    return _CONTROL.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """The readable format, one record per line whatever it carries. Messages hold what
    devices and admins sent (an ack's id, a device model): a newline in one would otherwise
    print a second line that passes for one the server wrote. So the message is escaped,
    and a traceback, which must stay readable over several lines, is indented: a line that
    starts in the first column always starts a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        # Done on the whole text rather than in formatException: the traceback may have been
        # rendered (and cached on the record) by another handler already.
        first, *rest = super().format(record).split("\n")
        return "\n".join([first, *(TRACEBACK_INDENT + escape_controls(line) for line in rest)])


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates its context on every start; `paku-iot migrate` reports for itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # httpx logs every request of the admin CLI at INFO.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # gmqtt narrates every packet at INFO; its warnings are all we need.
    logging.getLogger("gmqtt").setLevel(max(logging.WARNING, logging.getLevelName(level)))
