"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out.

    PostgreSQL stores `timestamptz`. SQLite has no time type: SQLAlchemy stores a fixed-width
    text form that sorts correctly, but only for naive values, so we store naive UTC there and
    put the zone back when reading.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> TypeEngine[Any]:
    """JSONB on PostgreSQL (indexable, compact), JSON text on SQLite."""
    return JSON().with_variant(JSONB(), "postgresql")


def big_id_type() -> TypeEngine[int]:
    """BIGINT ids on PostgreSQL; SQLite autoincrements only `INTEGER PRIMARY KEY`."""
    return BigInteger().with_variant(Integer(), "sqlite")


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same document once stored, so a redelivered payload
    read back from either database matches the one that arrives again.

    Not `==`: Python takes `true` for `1`. And numbers compare by value, through float when
    either is one: PostgreSQL's jsonb turns `-0.0` into `0.0` and `1e308` into its digits."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        try:
            return float(a) == float(b)
        except OverflowError:
            return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
