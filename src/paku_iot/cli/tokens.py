"""`paku-iot tokens create|list|revoke`: named admin tokens, managed on the database directly
(it works before any token exists, e.g. `docker compose exec paku-iot paku-iot tokens ...`)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from paku_iot.exceptions import NotFound
from paku_iot.settings import Settings

# The role names, spelled out here so that `--help` works without importing the security
# room; a test checks them against `security.roles.Role`.
ROLES = ("viewer", "operator", "publisher", "admin")


def add_parsers(commands: Any) -> None:
    tokens = commands.add_parser("tokens", help="named admin tokens (create, list, revoke)")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token and print it (once)")
    create.add_argument("name")
    create.add_argument(
        "--role",
        choices=ROLES,
        required=True,
        help="viewer: read all but secrets; operator: viewer + commands, config, device "
        "details, alert handling; publisher: firmware releases only (CI); admin: everything "
        "(docs/operations.md)",
    )
    actions.add_parser("list", help="names, roles, creation and revocation times")
    actions.add_parser("revoke", help="refuse a token from now on").add_argument("name")


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here: the admin CLI's other commands start without the database layer.
    from paku_iot.security.roles import Role  # noqa: PLC0415
    from paku_iot.security.tokens import AdminTokens  # noqa: PLC0415
    from paku_iot.storage.engine import create_engine  # noqa: PLC0415
    from paku_iot.storage.schema_version import require_current_schema  # noqa: PLC0415
    from paku_iot.storage.security import TokenStore  # noqa: PLC0415

    engine = create_engine(settings.resolved_database_url)
    try:
        await require_current_schema(engine)
        tokens = AdminTokens(TokenStore(engine), bootstrap_token="")
        if args.action == "create":
            token = await tokens.create(args.name, Role(args.role))
            print(f"token {args.name} ({args.role}): {token}")
            print("It is shown this once; only its hash is stored.")
        elif args.action == "list":
            named = await tokens.all()
            for named_token in named:
                state = (
                    f"revoked {named_token.revoked_at:%Y-%m-%d %H:%M}"
                    if named_token.revoked_at
                    else "live"
                )
                created = f"{named_token.created_at:%Y-%m-%d %H:%M}"
                print(f"{named_token.name:<24} {named_token.role:<9} created {created}  {state}")
            if not named:
                print("no named tokens (the bootstrap token is PAKU_ADMIN_TOKEN)")
        elif not await tokens.revoke(args.name):
            raise NotFound(f"no live token named {args.name!r}")
        else:
            print(f"revoked {args.name}")
    finally:
        await engine.dispose()
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args))
