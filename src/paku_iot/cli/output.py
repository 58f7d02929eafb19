"""How the admin commands print: readable lines, or the API's JSON with `--json`."""

from __future__ import annotations

import argparse
import json
from typing import Any


def print_result(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def device_line(d: dict[str, Any]) -> str:
    state = "online " if d["online"] else "offline"
    line = (
        f"{d['id']:<24} {d['model']:<16} {state} last seen {d['lastSeenAt'] or 'never':<27} "
        f"fw {d['fwVersion'] or '-':<10} rssi {d['rssi'] if d['rssi'] is not None else '-'}"
    )
    if d.get("tags"):
        line += f"  tags {','.join(d['tags'])}"
    if d.get("decommissionedAt"):
        line += f"  decommissioned {d['decommissionedAt']}"
    return line
