"""Grafana (dev.yaml's `grafana` profile): provisioned with the database (through the read-only
role) and a dashboard, the dashboard's queries run on the migrated schema in PostgreSQL as that
role (made by compose/postgres/roles.sh, as db-init makes it), no anonymous access, and an
admin password generated on the first start (its entrypoint, run here under busybox sh as the
Alpine-based image would)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from paku_iot.storage.migrate import upgrade
from tests.compose.test_db_roles import dsn, roles_database, run_roles
from tests.compose.test_entrypoints import busybox_path
from tests.support.compose import GRAFANA_DIR, environment, load_compose, services, strings


def test_grafana_is_provisioned_with_the_database_and_a_dashboard() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "paku-postgres.yaml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    dev = services(load_compose("dev"))
    assert dev["grafana"]["profiles"] == ["grafana"]
    postgres_env = environment(dev["postgres"])
    db_init = environment(dev["db-init"])
    source = datasources[0]
    assert source["url"] == "postgres:5432"
    # The read-only role db-init makes (compose/postgres/roles.sh), not the superuser.
    assert source["user"] == "paku_grafana" != postgres_env["POSTGRES_USER"]
    assert db_init.get("PAKU_DB_READONLY_ROLE", "paku_grafana") == source["user"]
    assert source["jsonData"]["database"] == postgres_env["POSTGRES_DB"]
    assert source["secureJsonData"]["password"] == db_init["PAKU_DB_READONLY_PASSWORD"]
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "paku-overview.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids


def grafana_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "paku-overview.json").read_text())
    return [
        (panel["title"], target["rawSql"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def expand_grafana_macros(sql: str) -> str:
    window = "now() - interval '6 hours'"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {window} AND now()", sql)
    sql = sql.replace("$__timeFrom()", f"({window})")
    sql = sql.replace("$__timeTo()", "(now())")
    assert "$__" not in sql, f"a Grafana macro the test does not expand: {sql}"
    return sql


@pytest.fixture
def grafana_database() -> Iterator[tuple[str, str, str]]:
    """A database set up as compose sets one up: db-init (compose/postgres/roles.sh) makes the
    application role and Grafana's read-only one, then the application role migrates. Yields
    (database, application role, read-only role); the roles are named for the test, since a
    PostgreSQL server's roles are shared by every database on it."""
    with roles_database("paku_dash") as (database, app, readonly):
        made = run_roles(database, app, readonly)
        assert made.returncode == 0, made.stdout + made.stderr
        upgrade(dsn(database, app))
        yield database, app, readonly


async def test_the_dashboard_queries_run_on_the_migrated_schema_as_the_read_only_role(
    grafana_database: tuple[str, str, str],
) -> None:
    """As Grafana runs them: as the read-only role, on tables and views the application role
    made after db-init. A query that writes, or reads a table or view the role was not
    granted, fails here."""
    database, app, readonly = grafana_database
    conn = await asyncpg.connect(dsn(database, app))
    try:
        now = dt.datetime.now(dt.UTC)
        await conn.execute(
            "INSERT INTO devices (id, model, metadata, created_at, online, fw_version, "
            "last_seen_at) VALUES ('d1', 'm', '{}', $1, true, '1.0.0', $1)",
            now,
        )
        await conn.execute(
            "INSERT INTO telemetry (device_id, ts, received_at, payload) "
            "VALUES ('d1', $1, $1, '{\"t\": 1}')",
            now,
        )
        await conn.execute(
            "INSERT INTO telemetry (device_id, ts, received_at, payload) "
            'VALUES (\'d1\', $1, $1, \'{"boiler": {"temp": 61.5}, "on": true}\')',
            now - dt.timedelta(seconds=1),
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(dsn(database, readonly))
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, current_setting('transaction_read_only') AS read_only "
            "FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert (role["rolsuper"], role["read_only"]) == (False, "on")
        for title, sql in grafana_queries():
            rows = await conn.fetch(expand_grafana_macros(sql))
            if title in ("Devices online", "Messages per minute", "Last seen"):
                assert rows, f"{title}: no rows for a device that is online and sending"
            if title == "Telemetry values":  # values, not counts: from telemetry_numeric
                assert sorted((r["metric"], r["value"]) for r in rows) == [
                    ("d1 boiler.temp", 61.5),
                    ("d1 t", 1.0),
                ]
    finally:
        await conn.close()


def test_grafana_is_not_anonymous_and_has_no_password_in_git() -> None:
    grafana = services(load_compose("dev"))["grafana"]
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert not [v for v in strings(grafana) if "paku-dev-only" in v]
    assert grafana["entrypoint"] == ["/bin/sh", "/paku/grafana/entrypoint.sh"]
    assert "./grafana/entrypoint.sh:/paku/grafana/entrypoint.sh:ro" in grafana["volumes"]


def run_grafana_entrypoint(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """compose/grafana/entrypoint.sh under busybox sh; the image's /run.sh and `grafana` are
    stand-ins that write down what they were given."""
    bin_dir = tmp_path / "stubs"
    bin_dir.mkdir(exist_ok=True)
    run = bin_dir / "run.sh"
    run.write_text(f'#!/bin/sh\nprintf "%s" "$GF_SECURITY_ADMIN_PASSWORD" > {tmp_path}/given\n')
    grafana = bin_dir / "grafana"
    grafana.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/cli\n')
    run.chmod(0o755)
    grafana.chmod(0o755)
    path = busybox_path(tmp_path) if not (tmp_path / "busybox-bin").exists() else ""
    path = path or str(tmp_path / "busybox-bin")
    return subprocess.run(
        ["sh", str(GRAFANA_DIR / "entrypoint.sh")],
        env={
            "PATH": f"{bin_dir}:{path}",
            "GF_PATHS_DATA": str(data),
            "PAKU_GRAFANA_RUN": str(run),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_admin_password_is_generated_once_into_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "var-lib-grafana"
    data.mkdir()
    first = run_grafana_entrypoint(tmp_path, data)
    assert first.returncode == 0, first.stderr
    password_file = data / "admin-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert (tmp_path / "given").read_text() == password
    assert not (tmp_path / "cli").exists()  # a new volume: Grafana creates the admin itself

    again = run_grafana_entrypoint(tmp_path, data)
    assert again.returncode == 0, again.stderr
    assert password_file.read_text().strip() == password
    assert (tmp_path / "given").read_text() == password

    # A volume from before (Grafana's database, no password file): the admin's password is
    # reset to the new one.
    old = tmp_path / "old-volume"
    old.mkdir()
    (old / "grafana.db").write_bytes(b"")
    upgraded = run_grafana_entrypoint(tmp_path, old)
    assert upgraded.returncode == 0, upgraded.stderr
    new_password = (old / "admin-password").read_text().strip()
    assert new_password != password
    assert (tmp_path / "cli").read_text().split()[-2:] == ["reset-admin-password", new_password]
    assert os.stat(old / "admin-password").st_mode & 0o777 == 0o600
