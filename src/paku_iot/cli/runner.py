"""Running the service in the foreground until SIGINT/SIGTERM: `serve` and `dev`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from paku_iot.broker.files import BrokerOptions, BrokerPaths
from paku_iot.broker.process import MosquittoProcess, find_mosquitto
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.netcheck import ensure_port_free
from paku_iot.server.hardening import is_loopback
from paku_iot.server.service import ALL_ROLES, Role, Service, admin_token, running_service
from paku_iot.settings import Settings
from paku_iot.storage.urls import async_database_url, describe

log = logging.getLogger("paku_iot")


def _freeze_startup_objects() -> None:
    """Move everything built at start (modules, the app, SQLAlchemy and pydantic internals)
    out of the garbage collector's sight. They live as long as the process, and a full
    collection that walks them all is a pause of tens of milliseconds in the middle of some
    request or ingest batch (seen as the p99 in docs/performance.md)."""
    gc.collect()
    gc.freeze()


def _install_stop_signals(on_stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop)


async def _run_until_stopped(
    service: Service, roles: frozenset[Role], on_ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; `on_ready` runs once the HTTP server is listening."""
    stop = asyncio.Event()
    _install_stop_signals(stop.set)
    if Role.API not in roles:
        _freeze_startup_objects()
        if on_ready is not None:
            on_ready()
        await stop.wait()
        return
    # Imported only for the API role: a collector-only process stays small without them.
    import uvicorn  # noqa: PLC0415

    from paku_iot.web.app import create_app  # noqa: PLC0415

    class _Server(uvicorn.Server):
        """uvicorn without its own signal handling: we own SIGINT/SIGTERM, so shutdown runs
        our teardown in order instead of re-raising the signal after the server stops."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    settings = service.settings
    server = _Server(
        uvicorn.Config(
            create_app(service),
            host=settings.http_host,
            port=settings.http_port,
            lifespan="off",
            # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 (or whatever its
            # own FORWARDED_ALLOW_IPS says) and hand every route that address as the client.
            # PAKU_TRUSTED_PROXIES alone decides whose header counts (web/client_address.py).
            proxy_headers=False,
            log_config=None,
            access_log=settings.log_level == "DEBUG",
        )
    )
    _freeze_startup_objects()
    serving = asyncio.create_task(server.serve())
    # uvicorn offers a flag, not an event, for "listening".
    while not server.started and not serving.done() and not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started and on_ready is not None:
        on_ready()
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stopping.cancel()
    if not server.started:
        raise SystemExit(f"the HTTP server could not start on {settings.http_base_url}")


async def serve(settings: Settings, roles: frozenset[Role] = ALL_ROLES) -> None:
    if Role.API in roles:
        ensure_port_free(settings.http_host, settings.http_port, "PAKU_HTTP_PORT")
    async with running_service(settings, roles) as service:
        log.info(
            "paku-iot %s running (database %s, broker %s:%d)",
            "+".join(sorted(roles)),
            describe(async_database_url(settings.resolved_database_url)),
            settings.mqtt_host,
            settings.mqtt_port,
        )
        await _run_until_stopped(service, roles)
    log.info("paku-iot stopped")


def _tls_update(settings: Settings, tls: bool) -> dict[str, Path | None]:
    """The TLS files `dev`'s broker uses: the configured ones when set; with `--tls` and none
    configured, a development CA and server certificate in <data dir>/certs (made once,
    kept after). The backend itself keeps to the plain listener, from this same machine."""
    if not tls or (settings.mqtt_tls_cert_file and settings.mqtt_tls_key_file):
        return {}
    host = settings.mqtt_host
    extra = [] if host in ("", "0.0.0.0", "::") or is_loopback(host) else [host]
    from paku_iot.broker.certs import ensure_dev_certs  # noqa: PLC0415 - dev --tls only

    files = ensure_dev_certs(settings.data_dir / "certs", extra)
    return {
        "mqtt_tls_cert_file": files.server_cert.resolve(),
        "mqtt_tls_key_file": files.server_key.resolve(),
        "mqtt_tls_ca_file": files.ca_cert.resolve(),
    }


def prepare_dev(settings: Settings, *, tls: bool = False) -> Settings:
    """Everything `dev` needs on disk: data dir, broker files, secrets, migrated database,
    and with `tls` the certificates. Returns the settings `dev` runs with (the broker dir,
    admin token and TLS files filled in)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update=_tls_update(settings, tls))
    broker_dir = settings.broker_dir or settings.data_dir / "broker"
    prepare_broker_dir(
        broker_dir,
        BrokerOptions(
            listen_host=settings.mqtt_host,
            listen_port=settings.mqtt_port,
            backend_port=settings.mqtt_backend_port,
            backend_username=settings.mqtt_username,
            max_payload_bytes=settings.max_payload_bytes,
            max_queued_messages=settings.broker_max_queued_messages,
            max_queued_bytes=settings.broker_max_queued_bytes,
            tls_port=settings.mqtt_tls_port,
            tls_cert_file=settings.mqtt_tls_cert_file,
            tls_key_file=settings.mqtt_tls_key_file,
            tls_ca_file=settings.mqtt_tls_ca_file,
        ),
    )
    token = admin_token(settings)
    from paku_iot.storage.migrate import upgrade  # noqa: PLC0415 - Alembic only for dev

    upgrade(settings.resolved_database_url)
    return settings.model_copy(update={"broker_dir": broker_dir.resolve(), "admin_token": token})


def _has_tls(settings: Settings) -> bool:
    return settings.mqtt_tls_cert_file is not None and settings.mqtt_tls_key_file is not None


def _banner(settings: Settings, token_note: str) -> str:
    mqtt = [f"  MQTT         mqtt://{settings.mqtt_host}:{settings.mqtt_port}"]
    if _has_tls(settings):
        ca = settings.mqtt_tls_ca_file
        mqtt.append(
            f"  MQTT (TLS)   mqtts://{settings.mqtt_host}:{settings.mqtt_tls_port}   "
            + (f"(CA: {ca})" if ca else "(verify with the CA of PAKU_MQTT_TLS_CERT_FILE)")
        )
    return "\n".join(
        [
            "",
            "paku-iot dev is running",
            f"  API          {settings.http_base_url}   (docs: {settings.http_base_url}/docs)",
            *mqtt,
            f"  Admin token  {settings.admin_token}   {token_note}",
            f"  Database     {describe(async_database_url(settings.resolved_database_url))}",
            f"  Data dir     {settings.data_dir.resolve()}",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


async def _demo_fleet(service: Service, count: int, rate: float, stop: asyncio.Event) -> None:
    """`dev --simulate N`: provision N devices and run them until dev stops. They check for
    firmware updates every minute, so a release published to model `simulated` rolls out."""
    # Imported here: only the demo needs the devices (and the key's encoding).
    from paku_iot.device.simulate import OtaPlan, run_fleet  # noqa: PLC0415
    from paku_iot.ota.signing import public_key_raw_b64  # noqa: PLC0415

    creds = []
    for _ in range(count):
        made = await service.registry.provision(model="simulated")
        creds.append((made.device.id, made.password))
    log.info("demo fleet: %d simulated devices at %g msgs/s", count, rate)
    settings = service.settings
    ota = OtaPlan(
        settings.http_base_url,
        public_key_raw_b64(service.ota_public_key),
        settings.data_dir / "simulated-devices",
        check_every_s=60,
    )
    await run_fleet(
        settings.mqtt_host,
        settings.mqtt_port,
        creds,
        rate=rate,
        duration_s=None,
        stop=stop,
        ota=ota,
    )


async def dev(
    settings: Settings, token_note: str = "", *, simulate: int = 0, simulate_rate: float = 2.0
) -> None:
    ensure_port_free(settings.http_host, settings.http_port, "PAKU_HTTP_PORT")
    ensure_port_free(settings.mqtt_host, settings.mqtt_port, "PAKU_MQTT_PORT")
    ensure_port_free(settings.mqtt_host, settings.mqtt_backend_port, "PAKU_MQTT_BACKEND_PORT")
    if _has_tls(settings):
        ensure_port_free(settings.mqtt_host, settings.mqtt_tls_port, "PAKU_MQTT_TLS_PORT")
    assert settings.broker_dir is not None
    broker = MosquittoProcess(
        find_mosquitto(settings.mosquitto_bin),
        BrokerPaths(settings.broker_dir),
        settings.mqtt_host,
        settings.mqtt_port,
    )
    await broker.start()
    try:
        async with running_service(settings) as service:
            # The banner says "running" only once the API answers: scripts wait for it.
            def announce() -> None:
                print(_banner(settings, token_note), flush=True)

            stop_fleet = asyncio.Event()
            fleet = (
                asyncio.create_task(_demo_fleet(service, simulate, simulate_rate, stop_fleet))
                if simulate > 0
                else None
            )
            watch = asyncio.create_task(broker.wait())
            run = asyncio.create_task(_run_until_stopped(service, ALL_ROLES, announce))
            done, _ = await asyncio.wait({watch, run}, return_when=asyncio.FIRST_COMPLETED)
            if fleet is not None:
                stop_fleet.set()
                await asyncio.gather(fleet, return_exceptions=True)
            if watch in done:
                run.cancel()
                raise SystemExit(
                    f"mosquitto exited unexpectedly (code {watch.result()}); "
                    f"see {BrokerPaths(settings.broker_dir).log_file}"
                )
            watch.cancel()
            run.result()
    finally:
        await broker.stop()
    print("paku-iot dev stopped; the broker is stopped too.", flush=True)
