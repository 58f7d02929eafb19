"""`paku-iot devices tag|decommission|recommission`: tags and taking devices out of service."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from paku_iot.cli.output import device_line, print_result
from paku_iot.exceptions import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Callable

    from paku_iot.cli.apiclient import ApiClient

# What `DELETE /devices/{id}` erases (storage/devices.py `delete`), said before it is done.
DELETE_ERASES = (
    "the device with its notes, metadata and tags, its credentials, and all its telemetry, "
    "events, commands, desired configuration, OTA progress, claim codes and alerts"
)


def add_parsers(dev: Any, common: argparse.ArgumentParser) -> None:
    """The actions of the `devices` group this module runs."""
    tag = dev.add_parser(
        "tag", parents=[common], help="add and remove tags on devices (removals first)"
    )
    tag.add_argument("device_ids", nargs="+", metavar="ID")
    tag.add_argument("--add", action="append", default=[], metavar="TAG", help="repeatable")
    tag.add_argument("--remove", action="append", default=[], metavar="TAG", help="repeatable")
    dev.add_parser(
        "decommission",
        parents=[common],
        help="revoke a device's credentials and hide it, keeping its history",
    ).add_argument("device_id")
    dev.add_parser(
        "recommission",
        parents=[common],
        help="bring a decommissioned device back with a new password",
    ).add_argument("device_id")


def _tag(api: ApiClient, args: argparse.Namespace) -> int:
    if not args.add and not args.remove:
        raise InvalidInput("nothing to change: give --add, --remove or both")
    body = {"ids": args.device_ids, "add": args.add, "remove": args.remove}
    items = api.request("POST", "/devices/tags", json=body)["items"]
    print_result(args, items, "\n".join(device_line(d) for d in items))
    return 0


def _decommission(api: ApiClient, args: argparse.Namespace) -> int:
    device = api.request("POST", f"/devices/{args.device_id}/decommission")
    print_result(
        args,
        device,
        f"decommissioned {device['id']}: its credentials no longer work; its history is kept "
        f"(`devices list --decommissioned` lists it)",
    )
    return 0


def _recommission(api: ApiClient, args: argparse.Namespace) -> int:
    device = api.request("POST", f"/devices/{args.device_id}/recommission")
    print_result(
        args,
        device,
        f"recommissioned {device['id']}; new MQTT password: {device['credentials']['password']}",
    )
    return 0


HANDLERS: dict[tuple[str, str], Callable[[ApiClient, argparse.Namespace], int]] = {
    ("devices", "tag"): _tag,
    ("devices", "decommission"): _decommission,
    ("devices", "recommission"): _recommission,
}
