"""`paku-iot alert-rules|alerts` against a running `paku-iot dev`: a rule made, shown, listed,
disabled, enabled and deleted from the command line; an alert listed, acknowledged, silenced,
and its deliveries shown."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.engine import create_engine
from paku_iot.storage.records import AlertEvent, AlertTransition
from tests.support.cli import cli

SECRET = "cli-secret-never-shown"


async def open_alert(tmp_path: Path, rule_id: str, device_id: str) -> int:
    """What the evaluator would do (not part of this work): open an alert in the dev
    server's database."""
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'paku.db'}")
    try:
        store = AlertStore(engine)
        rule = await store.get_rule(rule_id)
        assert rule is not None
        transition = AlertTransition(
            rule_id, device_id, AlertEvent.OPENED, datetime.now(UTC), {"value": 99}
        )
        [alert] = await store.apply([transition], lambda _: rule.destinations)
        return alert.id
    finally:
        await engine.dispose()


async def test_alert_rules_and_alerts_from_the_command_line(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, _ = dev_api
    created = await cli(
        env,
        tmp_path,
        "alert-rules",
        "create",
        "--name",
        "too hot",
        "--kind",
        "threshold",
        "--model",
        "lamp",
        "--field",
        "env.temp",
        "--above",
        "30",
        "--below",
        "-5",
        "--for",
        "60",
        "--webhook",
        "https://hooks.example/a",
        "--secret",
        SECRET,
        "--ntfy",
        "https://ntfy.example/t",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    rule = json.loads(created.stdout)
    assert SECRET not in created.stdout
    assert rule["destinations"] == [
        {"type": "webhook", "url": "https://hooks.example/a", "hasSecret": True},
        {"type": "ntfy", "url": "https://ntfy.example/t", "hasSecret": False},
    ]
    assert (rule["model"], rule["above"], rule["below"], rule["forSeconds"]) == ("lamp", 30, -5, 60)
    rule_id = rule["id"]

    shown = await cli(env, tmp_path, "alert-rules", "show", rule_id)
    assert shown.returncode == 0, shown.stderr
    assert f"{rule_id}  enabled  'too hot' threshold env.temp > 30 or < -5 for 60s" in shown.stdout
    assert "on model lamp -> webhook, ntfy" in shown.stdout
    assert "https://hooks.example/a  (signed)" in shown.stdout

    disabled = await cli(env, tmp_path, "alert-rules", "disable", rule_id)
    assert "disabled" in disabled.stdout
    listed = await cli(env, tmp_path, "alert-rules", "list", "--json")
    assert [(r["id"], r["enabled"]) for r in json.loads(listed.stdout)] == [(rule_id, False)]
    enabled = await cli(env, tmp_path, "alert-rules", "enable", rule_id, "--json")
    assert json.loads(enabled.stdout)["enabled"] is True

    alert_id = await open_alert(tmp_path, rule_id, "lamp-1")
    alerts = await cli(env, tmp_path, "alerts", "list", "--state", "open")
    assert alerts.returncode == 0, alerts.stderr
    assert f"{alert_id}  open     lamp-1" in alerts.stdout
    assert "too hot" in alerts.stdout
    none = await cli(env, tmp_path, "alerts", "list", "--device", "lamp-2")
    assert none.stdout.strip() == "no alerts"
    acked = await cli(env, tmp_path, "alerts", "ack", str(alert_id))
    assert "acked by admin" in acked.stdout
    silenced = await cli(env, tmp_path, "alerts", "silence", str(alert_id), "--for", "600")
    assert "silenced until" in silenced.stdout
    deliveries = await cli(env, tmp_path, "alerts", "deliveries", str(alert_id))
    assert deliveries.returncode == 0, deliveries.stderr
    # The server's outbox is already trying (hooks.example does not resolve): each attempt
    # is listed under its delivery.
    assert re.search(
        r"opened   webhook https://hooks\.example/a  pending after \d+ attempt\(s\)",
        deliveries.stdout,
    ), deliveries.stdout
    assert SECRET not in deliveries.stdout

    for args, expected in [
        (("alert-rules", "show", "ar-0"), "no alert rule 'ar-0'"),
        (("alerts", "show", "x"), "alert ids are numbers"),
        (("alerts", "ack", "999999"), "no alert 999999"),
        (("alerts", "silence", str(alert_id), "--for", "0"), "seconds must be between 1"),
        (
            ("alert-rules", "create", "--name", "n", "--kind", "offline"),
            "give at least one of --webhook, --slack, --ntfy",
        ),
        (
            ("alert-rules", "create", "--name", "n", "--kind", "threshold", "--ntfy", "https://x"),
            "field is required for a threshold rule",
        ),
    ]:
        result = await cli(env, tmp_path, *args)
        assert result.returncode == 1, (args, result.stdout)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr

    deleted = await cli(env, tmp_path, "alert-rules", "delete", rule_id)
    assert deleted.stdout.strip() == f"deleted {rule_id}"
    after = await cli(env, tmp_path, "alerts", "list", "--json")
    assert json.loads(after.stdout) == []
