"""The PostgreSQL the tests make their databases on (PAKU_TEST_PG_DSN, by default the
machine's at 127.0.0.1:5432)."""

from __future__ import annotations

import os

import asyncpg

PG_ADMIN_DSN = os.environ.get("PAKU_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_dsn(database: str) -> str:
    """The admin DSN, for another database on the same server."""
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
