"""`paku-iot ota promote|pause|resume|abort|timeline`, and a plan at `ota publish`: a
release's waves and its state by hand (docs/ota.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from paku_iot.cli.output import print_result

if TYPE_CHECKING:
    from collections.abc import Callable

    from paku_iot.cli.apiclient import ApiClient

# `ota publish` options and the upload's form fields they fill.
PLAN_FIELDS = {
    "plan": "plan",
    "min_confirmed": "minConfirmed",
    "min_confirmed_percent": "minConfirmedPercent",
    "abort_failure_percent": "abortFailurePercent",
    "abort_min_devices": "abortMinDevices",
}


def add_publish_options(publish: argparse.ArgumentParser) -> None:
    publish.add_argument(
        "--plan",
        help='waves as JSON, e.g. \'[{"percent": 10, "soakSeconds": 3600}, {"percent": 100}]\': '
        "the autopilot rolls the release out wave by wave (--rollout is then ignored)",
    )
    publish.add_argument("--min-confirmed", type=int, help="confirmations a wave needs (1)")
    publish.add_argument(
        "--min-confirmed-percent", type=int, help="share of the devices that tried (50)"
    )
    publish.add_argument(
        "--abort-failure-percent", type=int, help="abort at this share of failures (10)"
    )
    publish.add_argument("--abort-min-devices", type=int, help="once this many devices tried (3)")


def publish_fields(args: argparse.Namespace) -> dict[str, str]:
    return {
        field: str(getattr(args, option))
        for option, field in PLAN_FIELDS.items()
        if getattr(args, option) is not None
    }


def add_parsers(ota_actions: Any, common: argparse.ArgumentParser) -> None:
    for action, help_text in (
        ("promote", "move a release with a plan to its next wave now"),
        ("pause", "offer a release to nobody new"),
        ("resume", "roll a paused release again (its wave's soak starts again)"),
        ("abort", "stop a release for good: offered to nobody"),
    ):
        parser = ota_actions.add_parser(action, parents=[common], help=help_text)
        parser.add_argument("release_id")
        if action in ("pause", "abort"):
            parser.add_argument("--reason", help="kept on the release's timeline")
    ota_actions.add_parser(
        "timeline", parents=[common], help="a release's state changes, by whom and why"
    ).add_argument("release_id")


def state_line(r: dict[str, Any]) -> str:
    if r.get("plan") is None:
        text = r["state"]
    else:
        text = f"{r['state']}, wave {r['currentWave']} of {len(r['plan'])}"
    return f"{text}: {r['stateReason']}" if r.get("stateReason") else text


def _act(api: ApiClient, args: argparse.Namespace) -> int:
    reason = getattr(args, "reason", None)
    body = {"reason": reason} if reason else None
    release = api.request("POST", f"/ota/releases/{args.release_id}/{args.action}", json=body)
    print_result(
        args,
        release,
        f"{release['id']}  {release['version']}  {release['rolloutPercent']}%  "
        f"{state_line(release)}",
    )
    return 0


def _event_line(e: dict[str, Any]) -> str:
    detail = e["detail"]
    text = f"{e['at']}  {e['kind']:<9} wave {detail.get('wave', '?')}  by {e['actor']}"
    if detail.get("reason"):
        text += f": {detail['reason']}"
    return text


def _timeline(api: ApiClient, args: argparse.Namespace) -> int:
    items = api.request("GET", f"/ota/releases/{args.release_id}/timeline")["items"]
    print_result(args, items, "\n".join(_event_line(e) for e in items) or "no changes yet")
    return 0


HANDLERS: dict[tuple[str, str], Callable[[ApiClient, argparse.Namespace], int]] = {
    ("ota", "promote"): _act,
    ("ota", "pause"): _act,
    ("ota", "resume"): _act,
    ("ota", "abort"): _act,
    ("ota", "timeline"): _timeline,
}
