"""compose/postgres/roles.sh (the db-init step of both compose files) on a real PostgreSQL: an
install whose tables a superuser made (every install before the roles existed) gets an
application role that owns them and is no superuser, and a read-only role for Grafana; the
application migrates, backs up and restores as that role, and cannot do what only a superuser
can. The machine's PostgreSQL (trust authentication) stands in for the postgres container."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support import require
from tests.support.compose import COMPOSE_DIR
from tests.support.postgres import PG_ADMIN_DSN, pg_admin
from tests.support.processes import run_paku
from tests.support.processes import run_script as script

ROLES = COMPOSE_DIR / "postgres" / "roles.sh"
REPO = COMPOSE_DIR.parent


def run_roles(database: str, app: str, readonly: str) -> subprocess.CompletedProcess[str]:
    host = PG_ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    return subprocess.run(
        ["bash", str(ROLES)],
        env={
            **os.environ,
            "PGHOST": host.split(":")[0],
            "PGPORT": host.split(":")[1] if ":" in host else "5432",
            "PGUSER": PG_ADMIN_DSN.split("://", 1)[1].split("@", 1)[0].split(":")[0],
            "PGDATABASE": database,
            "PAKU_DB_APP_ROLE": app,
            "PAKU_DB_APP_PASSWORD": "app-password-from-the-test",
            "PAKU_DB_READONLY_ROLE": readonly,
            "PAKU_DB_READONLY_PASSWORD": "ro-password-from-the-test",
            # This machine's superuser is shared: keep its password (the compose files don't).
            "PAKU_DB_KEEP_SUPERUSER_PASSWORD": "true",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dsn(database: str, user: str | None = None) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    if user is not None:
        base = base.replace(base.split("://", 1)[1].split("@", 1)[0] + "@", f"{user}@", 1)
    return f"{base}/{database}"


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def refused(url: str, sql: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(sql)
        return str(caught.value)
    finally:
        await conn.close()


@contextlib.contextmanager
def roles_database(prefix: str) -> Iterator[tuple[str, str, str]]:
    """An empty database and the names of an application role and a read-only one, all
    named for the test (a PostgreSQL server's roles are shared by every database on it);
    dropped afterwards. Yields (database, application role, read-only role)."""
    require(shutil.which("psql") is not None, "psql is not installed")
    try:
        asyncio.run(pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not reachable: {exc}")
    tag = secrets.token_hex(5)
    database, app, readonly = f"{prefix}_{tag}", f"paku_app_{tag}", f"paku_ro_{tag}"
    asyncio.run(pg_admin(f"CREATE DATABASE {database}"))
    try:
        yield database, app, readonly
    finally:
        asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        for role in (app, readonly):
            asyncio.run(pg_admin(f"DROP ROLE IF EXISTS {role}"))


@pytest.fixture
def setup() -> Iterator[tuple[str, str, str]]:
    with roles_database("paku_roles") as names:
        yield names


def test_an_existing_install_gets_an_owner_role_and_a_read_only_one(
    setup: tuple[str, str, str], tmp_path: Path
) -> None:
    database, app, readonly = setup
    # An install from before: the superuser migrated, so it owns every table.
    migrated = run_paku("migrate", env={"PAKU_DATABASE_URL": dsn(database)}, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr

    made = run_roles(database, app, readonly)
    assert made.returncode == 0, made.stdout + made.stderr
    again = run_roles(database, app, readonly)  # every `up` runs it
    assert again.returncode == 0, again.stdout + again.stderr

    owners = asyncio.run(
        fetch(
            dsn(database),
            "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
        )
    )
    names = {row["relname"] for row in owners}
    assert {"devices", "telemetry", "telemetry_default"} <= names
    assert {row["owner"] for row in owners} == {app}, owners
    [role] = asyncio.run(
        fetch(
            dsn(database),
            f"SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            f"FROM pg_roles WHERE rolname = '{app}'",
        )
    )
    assert not any(role.values()), role

    # The application, as that role: migrations, a table of its own (a new partition).
    as_app = {"PAKU_DATABASE_URL": dsn(database, app)}
    migrated = run_paku("migrate", env=as_app, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    asyncio.run(
        fetch(
            dsn(database, app),
            "CREATE TABLE telemetry_test_part PARTITION OF telemetry "
            "FOR VALUES FROM ('2001-01-01') TO ('2001-01-02')",
        )
    )
    # ...and none of a superuser's powers.
    for sql in (
        "CREATE ROLE intruder SUPERUSER",
        "ALTER SYSTEM SET log_statement = 'none'",
        "COPY devices FROM PROGRAM 'id'",
        f"ALTER ROLE {app} SUPERUSER",
    ):
        asyncio.run(refused(dsn(database, app), sql))

    # Grafana's role reads everything, the partition made later too, and writes nothing.
    as_ro = dsn(database, readonly)
    asyncio.run(fetch(as_ro, "SELECT count(*) FROM devices"))
    asyncio.run(fetch(as_ro, "SELECT count(*) FROM telemetry_test_part"))
    for sql in (
        "INSERT INTO events DEFAULT VALUES",
        "DELETE FROM devices",
        "CREATE TABLE grafana_was_here (x int)",
    ):
        message = asyncio.run(refused(as_ro, sql))
        assert "permission denied" in message or "read-only" in message, message

    # Backup and restore as the application role: the dump's SQL runs as that role.
    env = {"PAKU_DATABASE_URL": dsn(database, app), "PAKU_DATA_DIR": str(tmp_path / "var")}
    backup = script(
        REPO / "scripts" / "backup.sh", "--out", str(tmp_path / "b"), env=env, cwd=tmp_path
    )
    assert backup.returncode == 0, backup.stderr
    [archive] = (tmp_path / "b").glob("paku-backup-*.tar.gz")
    restore = script(REPO / "scripts" / "restore.sh", "--yes", str(archive), env=env, cwd=tmp_path)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    asyncio.run(fetch(as_ro, "SELECT count(*) FROM devices"))  # still readable
