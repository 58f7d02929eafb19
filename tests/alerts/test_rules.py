"""Rule validation as every caller gets it (the API, the CLI, the dashboard): values JSON
cannot carry but Python callers can, and what a valid rule becomes."""

from __future__ import annotations

import math

import pytest

from paku_iot.alerts.rules import DestinationSpec, RuleSpec, validate
from paku_iot.exceptions import InvalidInput
from paku_iot.storage.records import AlertDestination, AlertKind, DestinationType

HOOK = DestinationSpec("webhook", "https://hooks.example/a", "s")


def test_a_valid_rule_parses_its_kind_and_destinations() -> None:
    spec = RuleSpec("cold", "threshold", field="t", below=2, destinations=(HOOK,))
    kind, destinations = validate(spec)
    assert kind is AlertKind.THRESHOLD
    assert destinations == (
        AlertDestination(DestinationType.WEBHOOK, "https://hooks.example/a", "s"),
    )
    assert validate(RuleSpec("ota", "ota_failed", destinations=(HOOK,)))[0] is AlertKind.OTA_FAILED


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (RuleSpec("x", "threshold", field="t", above=math.nan), "above must be a finite number"),
        (RuleSpec("x", "threshold", field="t", below=math.inf), "below must be a finite number"),
        (RuleSpec("x", "rejected_rate", per_minute=True), "perMinute must be a whole number"),  # type: ignore[arg-type]
        (RuleSpec("x", "offline", for_seconds=5), "forSeconds not allowed in offline rules"),
        (RuleSpec("x", "ota_failed", model="m" * 65), "model must be 1-64 characters"),
        (RuleSpec("x", "ota_failed"), "destinations must list 1-10"),
        (
            RuleSpec("x", "ota_failed", destinations=(DestinationSpec("ntfy", "https://"),)),
            "destinations[0].url must be an absolute",
        ),
    ],
)
def test_invalid_rules_name_their_problem(spec: RuleSpec, message: str) -> None:
    if spec.destinations == () and "destinations" not in message:
        spec = RuleSpec(**{**_fields(spec), "destinations": (HOOK,)})
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")) as raised:
        validate(spec)
    assert raised.value.code == "invalid_alert_rule"


def _fields(spec: RuleSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}
