"""`paku-iot alert-rules|alerts ...`: alert rules and alerts over the HTTP API, as the other
admin commands (`cli/admin.py`): readable lines, or the API's JSON with `--json`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from paku_iot.cli.admin import api_client, common_options
from paku_iot.cli.output import print_result
from paku_iot.exceptions import InvalidInput
from paku_iot.settings import Settings

if TYPE_CHECKING:
    from paku_iot.cli.apiclient import ApiClient

KINDS = ("offline", "threshold", "ota_failed", "rejected_rate")


def add_parsers(commands: Any) -> None:
    """Add the `alert-rules` and `alerts` groups to the top-level subparsers."""
    common = common_options()
    rules = commands.add_parser("alert-rules", help="rules that open alerts and notify")
    actions = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        parents=[common],
        help="make a rule; give one or more of --webhook, --slack, --ntfy",
    )
    create.add_argument("--name", required=True)
    create.add_argument("--kind", required=True, choices=KINDS)
    scope = create.add_mutually_exclusive_group()
    scope.add_argument("--device", help="only this device (default: every device)")
    scope.add_argument("--model", help="only devices of this model")
    scope.add_argument("--tag", help="only devices with this tag")
    create.add_argument("--field", help="threshold: the telemetry field (dots for nested ones)")
    create.add_argument("--above", type=float, help="threshold: fire above this value")
    create.add_argument("--below", type=float, help="threshold: fire below this value")
    create.add_argument(
        "--for", dest="for_seconds", type=float, help="threshold: seconds out of range first"
    )
    create.add_argument(
        "--silence", type=float, help="offline: seconds of silence (default: twice the interval)"
    )
    create.add_argument("--per-minute", type=int, help="rejected_rate: rejects a minute")
    create.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="a JSON webhook (repeatable); --secret signs it",
    )
    create.add_argument("--secret", help="signs every --webhook (X-Paku-Signature)")
    create.add_argument("--slack", action="append", default=[], metavar="URL")
    create.add_argument("--ntfy", action="append", default=[], metavar="URL")
    create.add_argument("--disabled", action="store_true", help="make it disabled")
    actions.add_parser("list", parents=[common], help="every rule")
    for action, text in [
        ("show", "one rule"),
        ("delete", "delete a rule with its alerts"),
        ("enable", "enable a rule"),
        ("disable", "disable a rule (its alerts stay)"),
    ]:
        actions.add_parser(action, parents=[common], help=text).add_argument("rule_id")

    alerts = commands.add_parser("alerts", help="alert history, acknowledge, silence")
    alert_actions = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = alert_actions.add_parser("list", parents=[common], help="alerts, newest first")
    listing.add_argument("--device")
    listing.add_argument("--rule")
    listing.add_argument("--state", choices=["open", "resolved"])
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    alert_actions.add_parser("show", parents=[common], help="one alert").add_argument("alert_id")
    alert_actions.add_parser("ack", parents=[common], help="acknowledge an alert").add_argument(
        "alert_id"
    )
    silence = alert_actions.add_parser(
        "silence", parents=[common], help="no notifications for a while"
    )
    silence.add_argument("alert_id")
    silence.add_argument("--for", dest="seconds", type=int, required=True, metavar="SECONDS")
    alert_actions.add_parser(
        "deliveries", parents=[common], help="an alert's notifications and every attempt"
    ).add_argument("alert_id")


def _rule_line(r: dict[str, Any]) -> str:
    if r["deviceId"]:
        scope = f"device {r['deviceId']}"
    elif r["model"]:
        scope = f"model {r['model']}"
    elif r.get("tag"):
        scope = f"tag {r['tag']}"
    else:
        scope = "every device"
    condition = ""
    if r["kind"] == "threshold":
        limits = [f"> {r['above']:g}"] if r["above"] is not None else []
        limits += [f"< {r['below']:g}"] if r["below"] is not None else []
        condition = f" {r['field']} {' or '.join(limits)}"
        if r["forSeconds"]:
            condition += f" for {r['forSeconds']:g}s"
    elif r["kind"] == "offline" and r["silenceSeconds"] is not None:
        condition = f" silent {r['silenceSeconds']:g}s"
    elif r["kind"] == "rejected_rate":
        condition = f" > {r['perMinute']}/min"
    state = "enabled " if r["enabled"] else "disabled"
    targets = ", ".join(d["type"] for d in r["destinations"])
    return f"{r['id']}  {state} {r['name']!r} {r['kind']}{condition} on {scope} -> {targets}"


def _alert_line(a: dict[str, Any]) -> str:
    line = (
        f"{a['id']:>6}  {a['state']:<8} {a['deviceId']:<24} {a['name'] or a['ruleId']!s:<24} "
        f"opened {a['openedAt']}"
    )
    if a["resolvedAt"]:
        line += f"  resolved {a['resolvedAt']}"
    if a["acknowledgedBy"]:
        line += f"  acked by {a['acknowledgedBy']}"
    if a["silencedUntil"]:
        line += f"  silenced until {a['silencedUntil']}"
    return line


def _delivery_lines(d: dict[str, Any]) -> list[str]:
    dest = d["destination"]
    head = (
        f"{d['id']:>6}  {d['event']:<8} {dest['type']:<7} {dest['url']}  {d['state']} "
        f"after {d['attempts']} attempt(s)"
    )
    lines = [head]
    for a in d["attemptLog"]:
        outcome = f"HTTP {a['statusCode']}" if a["statusCode"] is not None else "no answer"
        error = f" {a['error']}" if a["error"] else ""
        lines.append(f"          {a['at']}  {outcome}{error} ({a['durationMs']:.0f} ms)")
    return lines


def _create(api: ApiClient, args: argparse.Namespace) -> int:
    if args.secret is not None and not args.webhook:
        raise InvalidInput("--secret signs webhooks: give it with --webhook")
    destinations: list[dict[str, Any]] = [
        {"type": "webhook", "url": url} | ({"secret": args.secret} if args.secret else {})
        for url in args.webhook
    ]
    destinations += [{"type": "slack", "url": url} for url in args.slack]
    destinations += [{"type": "ntfy", "url": url} for url in args.ntfy]
    if not destinations:
        raise InvalidInput("give at least one of --webhook, --slack, --ntfy")
    optional = {
        "deviceId": args.device,
        "model": args.model,
        "tag": args.tag,
        "field": args.field,
        "above": args.above,
        "below": args.below,
        "forSeconds": args.for_seconds,
        "silenceSeconds": args.silence,
        "perMinute": args.per_minute,
    }
    body = {"name": args.name, "kind": args.kind, "destinations": destinations}
    body |= {k: v for k, v in optional.items() if v is not None}
    if args.disabled:
        body["enabled"] = False
    rule = api.request("POST", "/alert-rules", json=body)
    print_result(args, rule, f"created {_rule_line(rule)}")
    return 0


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    items = api.pages("/alert-rules", {"limit": 1000})
    print_result(args, items, "\n".join(_rule_line(r) for r in items) or "no alert rules")
    return 0


def _show(api: ApiClient, args: argparse.Namespace) -> int:
    rule = api.request("GET", f"/alert-rules/{args.rule_id}")
    urls = "\n".join(
        f"  {d['type']:<7} {d['url']}{'  (signed)' if d['hasSecret'] else ''}"
        for d in rule["destinations"]
    )
    print_result(args, rule, f"{_rule_line(rule)}\n{urls}")
    return 0


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/alert-rules/{args.rule_id}")
    print_result(args, {"deleted": args.rule_id}, f"deleted {args.rule_id}")
    return 0


def _set_enabled(api: ApiClient, args: argparse.Namespace, enabled: bool) -> int:
    rule = api.request("PATCH", f"/alert-rules/{args.rule_id}", json={"enabled": enabled})
    print_result(args, rule, _rule_line(rule))
    return 0


def _alerts_list(api: ApiClient, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise InvalidInput("--limit must be between 1 and 1000")
    params = {"limit": args.limit, "deviceId": args.device, "ruleId": args.rule}
    params["state"] = args.state
    query = {k: v for k, v in params.items() if v is not None}
    items = api.request("GET", "/alerts", params=query)["items"]
    print_result(args, items, "\n".join(_alert_line(a) for a in items) or "no alerts")
    return 0


def _alert_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"alert ids are numbers, not {text!r}") from None


def _alerts_show(api: ApiClient, args: argparse.Namespace) -> int:
    alert = api.request("GET", f"/alerts/{_alert_id(args.alert_id)}")
    print_result(args, alert, _alert_line(alert))
    return 0


def _alerts_ack(api: ApiClient, args: argparse.Namespace) -> int:
    alert = api.request("POST", f"/alerts/{_alert_id(args.alert_id)}/acknowledge")
    print_result(args, alert, _alert_line(alert))
    return 0


def _alerts_silence(api: ApiClient, args: argparse.Namespace) -> int:
    path = f"/alerts/{_alert_id(args.alert_id)}/silence"
    alert = api.request("POST", path, json={"seconds": args.seconds})
    print_result(args, alert, _alert_line(alert))
    return 0


def _alerts_deliveries(api: ApiClient, args: argparse.Namespace) -> int:
    items = api.request("GET", f"/alerts/{_alert_id(args.alert_id)}/deliveries")["items"]
    lines = [line for d in items for line in _delivery_lines(d)]
    print_result(args, items, "\n".join(lines) or "no notifications")
    return 0


_HANDLERS = {
    ("alert-rules", "create"): _create,
    ("alert-rules", "list"): _list,
    ("alert-rules", "show"): _show,
    ("alert-rules", "delete"): _delete,
    ("alert-rules", "enable"): lambda api, args: _set_enabled(api, args, True),
    ("alert-rules", "disable"): lambda api, args: _set_enabled(api, args, False),
    ("alerts", "list"): _alerts_list,
    ("alerts", "show"): _alerts_show,
    ("alerts", "ack"): _alerts_ack,
    ("alerts", "silence"): _alerts_silence,
    ("alerts", "deliveries"): _alerts_deliveries,
}


def handles(command: str) -> bool:
    return command in ("alert-rules", "alerts")


def run(settings: Settings, args: argparse.Namespace) -> int:
    with api_client(settings, args) as api:
        return _HANDLERS[(args.command, args.action)](api, args)
