"""The id of the HTTP request being served, for log lines (X-Request-ID)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

current_request_id: ContextVar[str | None] = ContextVar("paku_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request is being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True
