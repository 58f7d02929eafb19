"""The `paku-iot` command: a thin layer that turns errors into messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from paku_iot import __version__
from paku_iot.cli import admin, alerts, tokens
from paku_iot.exceptions import PakuError
from paku_iot.logs import configure_logging
from paku_iot.server import hardening
from paku_iot.settings import Settings, load_settings

# The server side (FastAPI, SQLAlchemy, Alembic, uvicorn) is imported only by the commands
# that run it: the admin commands start in a quarter of the time without it.

EXIT_ERROR = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paku-iot",
        description="The paku-iot backend. Settings come from PAKU_* environment variables, "
        ".env, and config/config.yml (see config/config.example.yml).",
    )
    parser.add_argument("--version", action="version", version=f"paku-iot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="run everything locally: a Mosquitto child, the API and the collector",
        description="Start a Mosquitto child process with a generated config, the HTTP API "
        "and the collector, storing under PAKU_DATA_DIR (default ./var). Ctrl-C stops all.",
    )
    dev.add_argument(
        "--tls",
        action="store_true",
        help="also listen for MQTT over TLS on PAKU_MQTT_TLS_PORT (8883), with the certificate "
        "in PAKU_MQTT_TLS_CERT_FILE/KEY_FILE or else a development CA and certificate made "
        "in <data dir>/certs",
    )
    dev.add_argument(
        "--simulate",
        type=int,
        default=0,
        metavar="N",
        help="also run a demo fleet of N simulated devices (model 'simulated')",
    )
    dev.add_argument(
        "--simulate-rate", type=float, default=2.0, help="their telemetry msgs/s in total (2)"
    )

    serve = commands.add_parser(
        "serve",
        help="run the API and/or the collector against an existing broker and database",
    )
    serve.add_argument(
        "--role",
        choices=["all", "api", "collector"],
        default="all",
        help="run only the API or only the collector, to scale either out (default: all)",
    )

    commands.add_parser("migrate", help="apply database migrations up to the newest")

    broker = commands.add_parser(
        "broker-config",
        help="write mosquitto.conf, ACL and password files for a broker run outside paku-iot",
    )
    broker.add_argument("--out", type=Path, required=True, help="directory to write into")
    broker.add_argument(
        "--listen",
        default=None,
        help="address the broker listens on (default: PAKU_MQTT_HOST)",
    )
    broker.add_argument(
        "--user", default=None, help="user Mosquitto runs as when started as root (default: you)"
    )
    broker.add_argument(
        "--log-stdout", action="store_true", help="log to stdout instead of a file (containers)"
    )
    admin.add_parsers(commands)
    alerts.add_parsers(commands)
    tokens.add_parsers(commands)
    return parser


def _migrate(settings: Settings) -> None:
    from paku_iot.storage.migrate import upgrade  # noqa: PLC0415
    from paku_iot.storage.urls import async_database_url, describe  # noqa: PLC0415

    upgrade(settings.resolved_database_url)
    print(f"database is up to date: {describe(async_database_url(settings.resolved_database_url))}")


def _broker_config(settings: Settings, args: argparse.Namespace) -> None:
    from paku_iot.broker.files import BrokerOptions  # noqa: PLC0415
    from paku_iot.broker.setup import prepare_broker_dir  # noqa: PLC0415

    listen_host = args.listen or settings.mqtt_host
    hardening.check_plain_listener(settings, listen_host)
    options = BrokerOptions(
        listen_host=listen_host,
        listen_port=settings.mqtt_port,
        backend_port=settings.mqtt_backend_port,
        backend_username=settings.mqtt_username,
        max_payload_bytes=settings.max_payload_bytes,
        max_queued_messages=settings.broker_max_queued_messages,
        max_queued_bytes=settings.broker_max_queued_bytes,
        run_as_user=args.user,
        log_to_file=not args.log_stdout,
        tls_port=settings.mqtt_tls_port,
        tls_cert_file=settings.mqtt_tls_cert_file,
        tls_key_file=settings.mqtt_tls_key_file,
        tls_ca_file=settings.mqtt_tls_ca_file,
    )
    paths = prepare_broker_dir(args.out, options)
    tls_note = (
        f"TLS listener on port {options.tls_port}, certificate and key copied into "
        f"{paths.tls_dir}\n"
        if options.tls
        else ""
    )
    print(
        f"wrote {paths.config}, {paths.acl} and {paths.password_file}\n"
        f"{tls_note}"
        f"the backend's broker password is in {paths.backend_password}\n"
        f"start the broker:  mosquitto -c {paths.config}\n"
        f"then run:          PAKU_BROKER_DIR={paths.root} paku-iot serve"
    )


def _dev(settings: Settings, tls: bool, simulate: int = 0, simulate_rate: float = 2.0) -> None:
    from paku_iot.cli import runner  # noqa: PLC0415

    hardening.check_admin_token(settings)
    hardening.check_plain_listener(settings, settings.mqtt_host)
    hardening.check_device_endpoint(settings)
    hardening.check_public_url(settings)
    token_note = (
        "(from PAKU_ADMIN_TOKEN)"
        if settings.admin_token
        else f"(kept in {settings.admin_token_file})"
    )
    asyncio.run(
        runner.dev(
            runner.prepare_dev(settings, tls=tls),
            token_note,
            simulate=simulate,
            simulate_rate=simulate_rate,
        )
    )


def _serve(settings: Settings, role: str) -> None:
    from paku_iot.cli import runner  # noqa: PLC0415
    from paku_iot.server.service import ALL_ROLES, Role  # noqa: PLC0415

    roles = ALL_ROLES if role == "all" else frozenset({Role(role)})
    if Role.API in roles:  # the token guards the API; a collector alone never uses it
        hardening.check_admin_token(settings)
        hardening.check_device_endpoint(settings)  # the API tells devices where to connect
        hardening.check_public_url(settings)
    asyncio.run(runner.serve(settings, roles))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "dev":
            _dev(settings, args.tls, args.simulate, args.simulate_rate)
        elif args.command == "serve":
            _serve(settings, args.role)
        elif args.command == "migrate":
            _migrate(settings)
        elif args.command == "broker-config":
            _broker_config(settings, args)
        elif args.command == "tokens":
            return tokens.run(settings, args)
        elif alerts.handles(args.command):
            return alerts.run(settings, args)
        else:
            return admin.run(settings, args)
    except PakuError as exc:
        print(f"paku-iot: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return 0
