"""One numeric payload field of one device, in time buckets, computed by the database.

Buckets start at whole multiples of their width since the Unix epoch (UTC), the same on both
databases: PostgreSQL's `date_bin` with the epoch as origin, SQLite's integer division of the
epoch seconds. Values that are not JSON numbers (strings, booleans, null, objects) are left
out, so a bucket's count is the count of numeric samples. `last` is the value of the bucket's
newest sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage.engine import translated_errors
from paku_iot.storage.types import UtcDateTime

FUNCTIONS = ("avg", "min", "max", "count", "last")


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    values: dict[str, float | int | None] = field(default_factory=dict)


# The numeric value of the field in each row of the range, with the row's bucket and its
# rank in the bucket (1: the newest), which `last` needs: a window function, so the same outer
# query serves both databases.
_VALUES = {
    "postgresql": """
SELECT date_bin(:width, ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b, ts,
       (payload #>> CAST(:path AS text[]))::float8 AS v
  FROM telemetry
 WHERE device_id = :device AND ts >= :start AND ts < :end
   AND jsonb_typeof(payload #> CAST(:path AS text[])) = 'number'""",
    "sqlite": """
SELECT (CAST(strftime('%s', ts) AS INTEGER) / :seconds) * :seconds AS b, ts,
       json_extract(payload, :path) AS v
  FROM telemetry
 WHERE device_id = :device AND ts >= :start AND ts < :end
   AND json_type(payload, :path) IN ('integer', 'real')""",
}
_BUCKETS = """
SELECT b, avg(v) AS avg, min(v) AS min, max(v) AS max, count(v) AS count,
       max(CASE WHEN rank = 1 THEN v END) AS last
  FROM (SELECT b, v, row_number() OVER (PARTITION BY b ORDER BY ts DESC) AS rank
          FROM ({values}) AS s) AS ranked
 GROUP BY b
 ORDER BY b"""


def _sqlite_path(parts: list[str]) -> str:
    # Each key quoted, so that keys with spaces or punctuation are found as they are.
    return "$" + "".join('."' + p.replace('"', '""') + '"' for p in parts)


async def aggregate(
    engine: AsyncEngine,
    device_id: str,
    path: list[str],
    *,
    width: timedelta,
    start: datetime,
    end: datetime,
    functions: list[str],
) -> list[Bucket]:
    """The buckets of [start, end) that hold at least one numeric value, oldest first."""
    dialect = engine.dialect.name
    sql = text(_BUCKETS.format(values=_VALUES[dialect]))
    params: dict[str, Any] = {"device": device_id}
    if dialect == "postgresql":
        params |= {"width": width, "path": path}
    else:
        params |= {"seconds": int(width.total_seconds()), "path": _sqlite_path(path)}
    sql = sql.bindparams(
        bindparam("start", start, type_=UtcDateTime()),
        bindparam("end", end, type_=UtcDateTime()),
    )
    async with translated_errors(), engine.connect() as conn:
        rows = (await conn.execute(sql, params)).mappings().all()
    buckets = []
    for row in rows:
        b = row["b"]
        begins = datetime.fromtimestamp(b, UTC) if isinstance(b, int) else b.astimezone(UTC)
        values: dict[str, float | int | None] = {}
        for name in functions:
            value = row[name]
            values[name] = int(value) if name == "count" else _float(value)
        buckets.append(Bucket(begins, values))
    return buckets


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
