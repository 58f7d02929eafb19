"""Times in alert values and notification bodies, written as the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, microseconds only when there are some: the form pydantic
    gives the API's datetimes, so an alert's times read the same in a webhook body and in
    `GET /alerts`. A naive datetime is taken as UTC (SQLite hands them back naive)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
