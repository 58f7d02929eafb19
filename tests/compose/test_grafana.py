"""Grafana (dev.yaml's `grafana` profile): provisioned with the database and a dashboard,
and the dashboard's queries run on the migrated schema in PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import asyncpg
import yaml

from paku_iot.storage.migrate import upgrade
from tests.support.compose import GRAFANA_DIR, environment, load_compose, services


def test_grafana_is_provisioned_with_the_database_and_a_dashboard() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "paku-postgres.yaml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    dev = services(load_compose("dev"))
    assert dev["grafana"]["profiles"] == ["grafana"]
    postgres_env = environment(dev["postgres"])
    source = datasources[0]
    assert source["url"] == "postgres:5432"
    assert source["user"] == postgres_env["POSTGRES_USER"]
    assert source["jsonData"]["database"] == postgres_env["POSTGRES_DB"]
    assert source["secureJsonData"]["password"] == postgres_env["POSTGRES_PASSWORD"]
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
    assert "$__" not in sql, f"a Grafana macro the test does not expand: {sql}"
    return sql


async def test_the_dashboard_queries_run_on_the_migrated_schema(empty_pg_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_pg_database)
    conn = await asyncpg.connect(empty_pg_database)
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
        for title, sql in grafana_queries():
            rows = await conn.fetch(expand_grafana_macros(sql))
            if title in ("Devices online", "Messages per minute", "Last seen"):
                assert rows, f"{title}: no rows for a device that is online and sending"
    finally:
        await conn.close()
