"""`paku-iot devices|cmd|config|ota ...`: thin layers over the HTTP API for people and scripts.

Every command prints something readable, or the API's JSON with `--json`. The API address is
`--url` or the settings' public/HTTP address; the admin token is `--token`, PAKU_ADMIN_TOKEN,
or the token file `paku-iot dev` generated.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paku_iot.cli import fleet, otaplans
from paku_iot.cli.otasign import add_sign_parser, run_sign, upload_fields
from paku_iot.cli.output import device_line as _device_line
from paku_iot.cli.output import print_result
from paku_iot.exceptions import InvalidInput, PakuError, SettingsError
from paku_iot.protocol import DEFAULT_COMMAND_TTL_S
from paku_iot.secretfiles import write_private_file
from paku_iot.security.claims import DEFAULT_TTL_S as CLAIM_CODE_TTL_S
from paku_iot.settings import Settings

if TYPE_CHECKING:
    from paku_iot.cli.apiclient import ApiClient
    from paku_iot.device.simulate import OtaPlan

FINAL_STATUSES = ("acked", "failed", "expired")


def add_parsers(commands: Any) -> None:
    """Add the `devices`, `cmd`, `ota` and `config` groups to the top-level subparsers."""
    common = common_options()
    _add_device_parsers(commands, common)
    _add_command_parsers(commands, common)
    _add_ota_parsers(commands, common)
    _add_config_parsers(commands, common)
    _add_simulate_parser(commands, common)


def common_options() -> argparse.ArgumentParser:
    """The options every admin command takes: where the API is, the token, --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="API base URL (default: PAKU_PUBLIC_URL or the HTTP address)")
    common.add_argument("--token", help="admin token (default: PAKU_ADMIN_TOKEN or the token file)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    return common


def _add_device_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    devices = commands.add_parser("devices", help="list, show, create, update, delete devices")
    dev = devices.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = dev.add_parser("list", parents=[common], help="list devices")
    listing.add_argument("--model")
    listing.add_argument("--online", choices=["true", "false"])
    listing.add_argument("--tag", help="only devices with this tag")
    listing.add_argument(
        "--decommissioned", action="store_true", help="only the decommissioned devices"
    )
    dev.add_parser("show", parents=[common], help="one device").add_argument("device_id")
    create = dev.add_parser(
        "create", parents=[common], help="provision a device and print its credentials (once)"
    )
    create.add_argument("--model", required=True)
    create.add_argument("--id", dest="device_id")
    create.add_argument("--notes")
    create.add_argument("--tag", action="append", dest="tags", metavar="TAG", help="repeatable")
    update = dev.add_parser("update", parents=[common], help="change a device's notes or metadata")
    update.add_argument("device_id")
    update.add_argument("--notes", help="free text ('' clears it)")
    update.add_argument("--metadata", help="JSON object; replaces the whole metadata ('{}' clears)")
    delete = dev.add_parser(
        "delete",
        parents=[common],
        help=f"erase a device for good: {fleet.DELETE_ERASES} ('decommission' keeps them)",
        description=f"Erase a device for good: {fleet.DELETE_ERASES}. The audit log keeps "
        "its entries. `paku-iot devices decommission` keeps the history instead.",
    )
    delete.add_argument("device_id")
    delete.add_argument("--yes", action="store_true", help="do not ask (asked only on a terminal)")
    fleet.add_parsers(dev, common)
    dev.add_parser("rotate", parents=[common], help="give a device a new password").add_argument(
        "device_id"
    )
    importer = dev.add_parser(
        "import",
        parents=[common],
        help="provision every device of a CSV (columns: model, id?, notes?)",
    )
    importer.add_argument("file", type=Path)
    importer.add_argument(
        "--out", type=Path, required=True, help="CSV for the credentials (written 0600)"
    )

    claim_codes = commands.add_parser("claim-codes", help="factory batches of claim codes")
    claim_actions = claim_codes.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_codes = claim_actions.add_parser(
        "create", parents=[common], help="register devices with one-time claim codes"
    )
    create_codes.add_argument("--model", required=True)
    create_codes.add_argument("--count", type=int, default=1)
    create_codes.add_argument("--ttl", type=int, default=CLAIM_CODE_TTL_S, help="seconds (30 days)")
    create_codes.add_argument(
        "--out", type=Path, required=True, help="CSV for the codes (written 0600)"
    )


def _add_command_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser("cmd", help="send commands and follow their status")
    cmd_actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    send = cmd_actions.add_parser("send", parents=[common], help="send a command to a device")
    send.add_argument("device_id")
    send.add_argument("name")
    send.add_argument("--params", default="{}", help="JSON object (default {})")
    send.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_COMMAND_TTL_S,
        help=f"seconds (default {DEFAULT_COMMAND_TTL_S})",
    )
    send.add_argument("--wait", action="store_true", help="wait for acked, failed or expired")
    send.add_argument("--timeout", type=float, default=60, help="seconds to --wait (default 60)")
    send.add_argument("--idempotency-key")
    show = cmd_actions.add_parser("show", parents=[common], help="one command")
    show.add_argument("device_id")
    show.add_argument("command_id")
    cmd_list = cmd_actions.add_parser("list", parents=[common], help="a device's commands")
    cmd_list.add_argument("device_id")
    cmd_list.add_argument("--status", choices=["queued", "sent", "acked", "failed", "expired"])


def _add_ota_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    ota = commands.add_parser("ota", help="firmware releases and rollouts")
    ota_actions = ota.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = ota_actions.add_parser(
        "publish", parents=[common], help="upload and release a firmware image (for CI)"
    )
    publish.add_argument("file", type=Path)
    publish.add_argument("--model", required=True)
    publish.add_argument("--version", required=True, help="semantic version, e.g. 1.4.2")
    publish.add_argument("--rollout", type=int, default=100, help="percent of devices (100)")
    publish.add_argument("--notes")
    publish.add_argument("--tag", help="offer the release only to devices with this tag")
    otaplans.add_publish_options(publish)
    publish.add_argument(
        "--signature-file",
        type=Path,
        help="the document `paku-iot ota sign` wrote for this image (required when the "
        "server holds only the public key)",
    )
    add_sign_parser(ota_actions)
    ota_actions.add_parser("list", parents=[common], help="releases").add_argument("--model")
    ota_actions.add_parser(
        "status", parents=[common], help="a release and its rollout"
    ).add_argument("release_id")
    rollout = ota_actions.add_parser("rollout", parents=[common], help="set the rollout percent")
    rollout.add_argument("release_id")
    rollout.add_argument("percent", type=int)
    otaplans.add_parsers(ota_actions, common)


def _add_simulate_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    simulate = commands.add_parser(
        "simulate",
        parents=[common],
        help="run a fleet of simulated devices (real MQTT clients) against paku-iot",
    )
    simulate.add_argument("--devices", type=int, default=10, help="how many (provisioned now)")
    simulate.add_argument("--rate", type=float, default=10, help="telemetry msgs/s in total")
    simulate.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C)")
    simulate.add_argument(
        "--credentials", type=Path, help="CSV of existing devices (username,password) to use"
    )
    simulate.add_argument("--save", type=Path, help="write the provisioned credentials (0600)")
    simulate.add_argument(
        "--model",
        default="simulated",
        help="the devices' model: provisioned with it, and the only one whose firmware "
        "they install (default simulated)",
    )
    simulate.add_argument("--mqtt-host", help="broker address (default: PAKU_MQTT_HOST)")
    simulate.add_argument(
        "--mqtt-port",
        type=int,
        help="broker port (default: PAKU_MQTT_PORT, or PAKU_MQTT_TLS_PORT with TLS)",
    )
    simulate.add_argument(
        "--mqtt-tls",
        action="store_true",
        help="MQTT over TLS, verifying the broker (chain and host name) with the system's CAs "
        "(the HTTPS API too)",
    )
    simulate.add_argument(
        "--cafile",
        type=Path,
        metavar="FILE",
        help="trust only the CA certificates in this PEM file (e.g. Caddy's root.crt), for "
        "MQTT (implies --mqtt-tls) and for the HTTPS API",
    )
    simulate.add_argument(
        "--ota-check",
        type=float,
        default=300,
        metavar="SECONDS",
        help="how often each device checks for a firmware update (0: never; default 300)",
    )
    simulate.add_argument(
        "--fail-share",
        type=float,
        default=0.0,
        metavar="F",
        help="the share of devices (0..1, chosen by a hash of their id) whose new firmware "
        "never has a healthy run, so that they roll back (default 0)",
    )
    simulate.add_argument(
        "--confirm-window",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a new image has for its first healthy run before the device rolls "
        "back (default 10; firmware should allow 60)",
    )


def _add_config_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    config = commands.add_parser("config", help="desired configuration")
    config_actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_set = config_actions.add_parser(
        "set", parents=[common], help="set a device's config from a JSON file ('-' = stdin)"
    )
    config_set.add_argument("device_id")
    config_set.add_argument("file")
    config_actions.add_parser(
        "get", parents=[common], help="desired and reported config"
    ).add_argument("device_id")


def api_client(
    settings: Settings, args: argparse.Namespace, verify: ssl.SSLContext | bool = True
) -> ApiClient:
    """The API client for `--url` and `--token` (or the settings): what every admin command
    talks through (here and in the sibling modules, `cli/alerts.py`)."""
    # Imported here, as in _simulate: `paku-iot serve` builds this parser too, and a collector
    # process should not carry an HTTP client or the simulated fleet in its memory.
    from paku_iot.cli.apiclient import ApiClient  # noqa: PLC0415

    token = args.token or settings.admin_token
    if not token:
        token_file = settings.admin_token_file
        if not token_file.is_file():
            raise SettingsError(
                "no admin token: pass --token, set PAKU_ADMIN_TOKEN, or run where "
                f"{token_file} exists"
            )
        token = token_file.read_text(encoding="utf-8").strip()
    return ApiClient(args.url or settings.http_base_url, token, verify=verify)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _command_line(c: dict[str, Any]) -> str:
    line = f"{c['id']}  {c['name']:<16} {c['status']:<8} created {c['createdAt']}"
    if c["status"] == "acked" and c["result"] is not None:
        line += f"  result {json.dumps(c['result'])}"
    if c["error"]:
        line += f"  error {c['error']}"
    return line


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one admin command; returns the exit code."""
    if args.command == "simulate":
        return _simulate(settings, args)

    if (args.command, args.action) == ("ota", "sign"):
        return run_sign(args)  # offline: no server, no token
    with api_client(settings, args) as api:
        handler = _HANDLERS[(args.command, args.action)]
        return handler(api, args)


def _ota_plan(
    settings: Settings, args: argparse.Namespace, workdir: Path, verify: ssl.SSLContext | bool
) -> OtaPlan:
    """The simulated devices pin the signing key as firmware does: read it from the API."""
    from paku_iot.cli.apiclient import ApiClient  # noqa: PLC0415
    from paku_iot.device.simulate import OtaPlan  # noqa: PLC0415

    url = args.url or settings.http_base_url
    with ApiClient(url, None, verify=verify) as api:
        key = api.request("GET", "/ota/public-key")["publicKey"]
    return OtaPlan(url, key, workdir, args.ota_check, model=args.model)


def _simulate_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The one context the fleet verifies servers with (MQTT and HTTPS), or None (plain
    MQTT; HTTPS with httpx's default CAs)."""
    if args.cafile is None and not args.mqtt_tls:
        return None
    from paku_iot.device.tls import client_context  # noqa: PLC0415

    return client_context(args.cafile)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from paku_iot.device.simulate import read_credentials, run_fleet  # noqa: PLC0415

    # First: a CA file that cannot be read should stop the run before anything is made.
    tls = _simulate_tls(args)
    if not 0 <= args.fail_share <= 1:
        raise InvalidInput("--fail-share must be between 0 and 1")
    if args.confirm_window <= 0:
        raise InvalidInput("--confirm-window must be above 0 seconds")
    verify: ssl.SSLContext | bool = tls if tls is not None else True
    if args.credentials is not None:
        creds = read_credentials(args.credentials)
    else:
        if not 1 <= args.devices <= 10_000:
            raise InvalidInput("--devices must be between 1 and 10000")
        with api_client(settings, args, verify) as api:
            creds = []
            for _ in range(args.devices):
                device = api.request("POST", "/devices", json={"model": args.model})
                creds.append((device["id"], device["credentials"]["password"]))
        if args.save is not None:
            _write_private_csv(args.save, ["username", "password"], [list(c) for c in creds])
    if args.ota_check < 0:
        raise InvalidInput("--ota-check must be 0 (never) or a number of seconds")
    host = args.mqtt_host or settings.mqtt_host
    port = args.mqtt_port or (settings.mqtt_port if tls is None else settings.mqtt_tls_port)
    with tempfile.TemporaryDirectory(prefix="paku-simulate-") as workdir:
        ota = _ota_plan(settings, args, Path(workdir), verify) if args.ota_check else None
        print(
            f"simulating {len(creds)} devices at {args.rate:g} msgs/s against "
            f"{'mqtts' if tls else 'mqtt'}://{host}:{port}; Ctrl-C stops",
            flush=True,
        )
        stats = asyncio.run(
            run_fleet(
                host,
                port,
                creds,
                rate=args.rate,
                duration_s=args.duration,
                progress=lambda s: print(s.line(), flush=True),
                ota=ota,
                tls=tls,
                fail_share=args.fail_share,
                confirm_window_s=args.confirm_window,
            )
        )
    # The last line is the summary; with --json, the counts as one JSON object.
    print(json.dumps(stats.summary()) if args.json else f"done: {stats.line()}", flush=True)
    return 0 if stats.connected == len(creds) and not stats.errors else 1


def _devices_list(api: ApiClient, args: argparse.Namespace) -> int:
    params = {"limit": 1000} | {
        k: v
        for k, v in [
            ("model", args.model),
            ("online", args.online),
            ("tag", args.tag),
            ("decommissioned", "true" if args.decommissioned else None),
        ]
        if v
    }
    items = api.pages("/devices", params)
    print_result(args, items, "\n".join(_device_line(d) for d in items) or "no devices")
    return 0


def _device_details(d: dict[str, Any]) -> str:
    reported = json.dumps(d["reported"]) if d["reported"] is not None else "nothing yet"
    return "\n".join(
        [
            _device_line(d),
            f"  notes:    {d['notes'] or '-'}",
            f"  metadata: {json.dumps(d['metadata'])}",
            f"  tags:     {', '.join(d['tags']) or '-'}",
            f"  reported: {reported}",
        ]
    )


def _devices_show(api: ApiClient, args: argparse.Namespace) -> int:
    device = api.request("GET", f"/devices/{args.device_id}")
    print_result(args, device, _device_details(device))
    return 0


def _devices_update(api: ApiClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.notes is not None:
        body["notes"] = args.notes or None
    if args.metadata is not None:
        body["metadata"] = _json_object(args.metadata, "--metadata")
    if not body:
        raise InvalidInput("nothing to change: give --notes, --metadata or both")
    device = api.request("PATCH", f"/devices/{args.device_id}", json=body)
    print_result(args, device, _device_details(device))
    return 0


def _devices_create(api: ApiClient, args: argparse.Namespace) -> int:
    body = {"model": args.model, "id": args.device_id, "notes": args.notes, "tags": args.tags}
    device = api.request("POST", "/devices", json={k: v for k, v in body.items() if v})
    creds = device["credentials"]
    print_result(
        args,
        device,
        f"created {device['id']} (model {device['model']})\n"
        f"  MQTT username: {creds['username']}\n"
        f"  MQTT password: {creds['password']}\n"
        "The password is shown this once; keep it with the device.",
    )
    return 0


def _devices_delete(api: ApiClient, args: argparse.Namespace) -> int:
    if not args.yes and sys.stdin.isatty():
        print(f"This erases {fleet.DELETE_ERASES} of {args.device_id}, for good.")
        print("`paku-iot devices decommission` keeps the history instead.")
        if input("Delete? [y/N] ").strip().lower() not in {"y", "yes"}:
            print("not deleted")
            return 1
    api.request("DELETE", f"/devices/{args.device_id}")
    print_result(args, {"deleted": args.device_id}, f"deleted {args.device_id}")
    return 0


def _devices_rotate(api: ApiClient, args: argparse.Namespace) -> int:
    device = api.request("POST", f"/devices/{args.device_id}/credentials")
    print_result(
        args, device, f"new MQTT password for {device['id']}: {device['credentials']['password']}"
    )
    return 0


def _cmd_send(api: ApiClient, args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "params": _json_object(args.params, "--params"),
        "ttlSeconds": args.ttl,
    }
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    command = api.request("POST", f"/devices/{args.device_id}/commands", json=body, headers=headers)
    if args.wait:
        deadline = time.monotonic() + args.timeout
        while command["status"] not in FINAL_STATUSES and time.monotonic() < deadline:
            time.sleep(0.2)
            command = api.request("GET", f"/devices/{args.device_id}/commands/{command['id']}")
    print_result(args, command, _command_line(command))
    if not args.wait:
        return 0
    return 0 if command["status"] == "acked" else 1


def _cmd_show(api: ApiClient, args: argparse.Namespace) -> int:
    command = api.request("GET", f"/devices/{args.device_id}/commands/{args.command_id}")
    print_result(args, command, _command_line(command))
    return 0


def _cmd_list(api: ApiClient, args: argparse.Namespace) -> int:
    params = {"limit": 1000} | ({"status": args.status} if args.status else {})
    items = api.pages(f"/devices/{args.device_id}/commands", params)
    print_result(args, items, "\n".join(_command_line(c) for c in items) or "no commands")
    return 0


def _config_text(view: dict[str, Any]) -> str:
    sync = "in sync" if view["inSync"] else "not yet applied"
    return (
        f"version {view['version']} ({sync}; device reports {view['reportedVersion']})\n"
        + json.dumps(view["config"], indent=2)
    )


def _config_set(api: ApiClient, args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {args.file}: {exc.strerror}") from None
    config = _json_object(text, args.file)
    view = api.request("PUT", f"/devices/{args.device_id}/config", json={"config": config})
    print_result(args, view, _config_text(view))
    return 0


def _config_get(api: ApiClient, args: argparse.Namespace) -> int:
    view = api.request("GET", f"/devices/{args.device_id}/config")
    print_result(args, view, _config_text(view))
    return 0


def _release_line(r: dict[str, Any]) -> str:
    state = "paused" if r["paused"] else f"{r['rolloutPercent']}%"
    return (
        f"{r['id']}  {r['model']:<16} {r['version']:<14} {state:<7} "
        f"{r['size']:>10} B  {r['sha256'][:12]}"
    )


def _ota_publish(api: ApiClient, args: argparse.Namespace) -> int:
    fields = {"model": args.model, "version": args.version, "rolloutPercent": str(args.rollout)}
    if args.notes:
        fields["notes"] = args.notes
    if args.tag:
        fields["tag"] = args.tag
    fields |= otaplans.publish_fields(args)
    if args.signature_file is not None:
        fields |= upload_fields(args.signature_file, args.model, args.version, args.file)
    try:
        image = args.file.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {args.file}: {exc.strerror}") from None
    with image:
        release = api.request(
            "POST", "/ota/firmware", data=fields, files={"file": (args.file.name, image)}
        )
    print_result(args, release, f"released {_release_line(release)}\n  {release['url']}")
    return 0


def _ota_list(api: ApiClient, args: argparse.Namespace) -> int:
    params = {"model": args.model} if args.model else None
    items = api.request("GET", "/ota/releases", params=params)["items"]
    print_result(args, items, "\n".join(_release_line(r) for r in items) or "no releases")
    return 0


def _ota_status(api: ApiClient, args: argparse.Namespace) -> int:
    release = api.request("GET", f"/ota/releases/{args.release_id}")
    counts = ", ".join(f"{k} {v}" for k, v in release["rollout"]["counts"].items())
    text = f"{_release_line(release)}\n  {otaplans.state_line(release)}\n  {counts}"
    print_result(args, release, f"{text}, never seen {release['rollout']['neverSeen']}")
    return 0


def _ota_patch(api: ApiClient, args: argparse.Namespace, body: dict[str, Any]) -> int:
    release = api.request("PATCH", f"/ota/releases/{args.release_id}", json=body)
    print_result(args, release, _release_line(release))
    return 0


def _ota_rollout(api: ApiClient, args: argparse.Namespace) -> int:
    return _ota_patch(api, args, {"rolloutPercent": args.percent})


def _write_private_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    # Credentials and codes go to a file only the user can read, never to the terminal log.
    write_private_file(path, buffer.getvalue())


def _devices_import(api: ApiClient, args: argparse.Namespace) -> int:
    try:
        with args.file.open(newline="", encoding="utf-8") as fh:
            entries = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidInput(f"cannot read {args.file}: {exc.strerror}") from None
    if not entries or "model" not in entries[0]:
        raise InvalidInput(f"{args.file} needs a header row with at least a 'model' column")
    rows: list[list[str]] = []
    for number, entry in enumerate(entries, start=2):
        body = {k: v for k, v in entry.items() if k in ("model", "id", "notes") and v}
        try:
            device = api.request("POST", "/devices", json=body)
        except PakuError as exc:
            # Whatever was made is saved; the message says where to pick up.
            if rows:
                _write_private_csv(args.out, ["deviceId", "username", "password"], rows)
            raise InvalidInput(
                f"{args.file} line {number}: {exc.message} ({len(rows)} devices made before it, "
                f"their credentials are in {args.out})"
            ) from None
        creds = device["credentials"]
        rows.append([device["id"], creds["username"], creds["password"]])
    _write_private_csv(args.out, ["deviceId", "username", "password"], rows)
    print_result(
        args,
        {"imported": len(rows), "out": str(args.out)},
        f"provisioned {len(rows)} devices; credentials in {args.out} (mode 0600)",
    )
    return 0


def _claim_codes_create(api: ApiClient, args: argparse.Namespace) -> int:
    body = {"model": args.model, "count": args.count, "ttlSeconds": args.ttl}
    items = api.request("POST", "/claim-codes", json=body)["items"]
    _write_private_csv(
        args.out,
        ["deviceId", "claimCode", "expiresAt"],
        [[i["deviceId"], i["claimCode"], i["expiresAt"]] for i in items],
    )
    print_result(
        args,
        {"created": len(items), "out": str(args.out)},
        f"registered {len(items)} devices; claim codes in {args.out} (mode 0600)",
    )
    return 0


_HANDLERS = {
    **fleet.HANDLERS,
    **otaplans.HANDLERS,
    ("devices", "import"): _devices_import,
    ("claim-codes", "create"): _claim_codes_create,
    ("ota", "publish"): _ota_publish,
    ("ota", "list"): _ota_list,
    ("ota", "status"): _ota_status,
    ("ota", "rollout"): _ota_rollout,
    ("devices", "list"): _devices_list,
    ("devices", "show"): _devices_show,
    ("devices", "create"): _devices_create,
    ("devices", "update"): _devices_update,
    ("devices", "delete"): _devices_delete,
    ("devices", "rotate"): _devices_rotate,
    ("cmd", "send"): _cmd_send,
    ("cmd", "show"): _cmd_show,
    ("cmd", "list"): _cmd_list,
    ("config", "set"): _config_set,
    ("config", "get"): _config_get,
}
