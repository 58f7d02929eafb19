"""The container deployment, checked without a Docker engine (there is none here or in CI).

- Statically: `docker-compose config` accepts every compose file, and the project's own rules
  hold (files that services mount or build from exist, every `${VAR}` is documented, healthy
  dependencies, healthchecks, restart policies and memory limits, no secrets in prod).
- By running what the containers run, as plain processes: the Dockerfile's CMD and the
  compose files' broker-init and migrate steps against PostgreSQL and a Mosquitto started by
  compose/mosquitto/entrypoint.sh, with the Dockerfile's HEALTHCHECK command asking /health;
  and the entrypoint's watcher, with `sh` and with busybox (the broker image's shell),
  reloading a real Mosquitto when the password file or the TLS certificate changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from paku_iot.broker.passwords import hash_password
from paku_iot.broker.process import find_mosquitto
from paku_iot.storage.migrate import upgrade
from tests.support import (
    ConnectRefused,
    DeviceClient,
    eventually,
    free_port,
    require,
    wait_for_port_sync,
)
from tests.test_processes import device_round_trip, stop

REPO = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILES = {"dev": COMPOSE_DIR / "dev.yaml", "prod": COMPOSE_DIR / "prod.yaml"}
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = COMPOSE_DIR / "mosquitto" / "entrypoint.sh"
BROKER_HEALTHCHECK = COMPOSE_DIR / "mosquitto" / "healthcheck.sh"
GRAFANA_DIR = COMPOSE_DIR / "grafana"

# Where the broker directory is mounted in every container that shares it: the generated
# mosquitto.conf names its files by absolute path, so it must be the same everywhere.
BROKER_MOUNT = "/paku/broker"
DATA_MOUNT = "/paku/data"
# The uid of `mosquitto` in the eclipse-mosquitto image; the paku-iot image runs as it too.
MOSQUITTO_IMAGE_UID = "1883"

# What an operator puts in compose/.env for prod (values made up for the checks).
PROD_ENV = {
    "PAKU_DATA_ROOT": "/srv/paku",
    "PAKU_DOMAIN": "iot.example.com",
    "POSTGRES_PASSWORD": "pg-password-from-the-test",
    "PAKU_ADMIN_TOKEN": "admin-token-from-the-test-0123456789",
    "PAKU_METRICS_TOKEN": "metrics-token-from-the-test-0123456789",
}
# The variables prod cannot start without.
PROD_REQUIRED = frozenset(
    {"PAKU_DATA_ROOT", "PAKU_DOMAIN", "POSTGRES_PASSWORD", "PAKU_METRICS_TOKEN"}
)

ONE_SHOT_CONDITION = "service_completed_successfully"
HEALTHY_CONDITION = "service_healthy"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- reading the files ----------------------------------------------------------------------


@dataclass
class Dockerfile:
    stages: list[str] = field(default_factory=list)  # base image of each stage, ARGs resolved
    env: dict[str, str] = field(default_factory=dict)  # ENV of the last stage
    user: str | None = None
    expose: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)  # the exec form after CMD
    cmd: list[str] = field(default_factory=list)
    copies: list[tuple[list[str], bool]] = field(default_factory=list)  # sources, --from?


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may also sit between continuation lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        yield keyword.upper(), rest.strip()


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    parsed = Dockerfile()
    args: dict[str, str] = {}
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = rest.split()[0]
            parsed.stages.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
            parsed.env = {}
        elif keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                parsed.env[name] = value
        elif keyword == "USER":
            parsed.user = rest
        elif keyword == "EXPOSE":
            parsed.expose += rest.split()
        elif keyword == "HEALTHCHECK":
            parsed.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
        elif keyword == "CMD":
            parsed.cmd = json.loads(rest)
        elif keyword == "COPY":
            words = rest.split()
            from_stage = any(w.startswith("--from=") for w in words)
            sources = [w for w in words if not w.startswith("--")][:-1]
            parsed.copies.append((sources, from_stage))
    return parsed


def load_compose(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILES[name].read_text())
    return document


def services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = document["services"]
    return found


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document (comments are not values)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, enough for these files."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator in (":-", "-"):
            return current if current else argument
        if operator in (":?", "?") and not current:
            raise KeyError(f"{name}: {argument}")
        return current or ""

    return VARIABLE.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def env_example_names() -> set[str]:
    names = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def volume_pairs(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount, short or long syntax."""
    pairs = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            pairs.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            # The source may hold `${VAR:?message}`, which may hold colons of its own.
            source = VARIABLE.sub(lambda m: m.group(0).replace(":", "\1"), volume)
            parts = source.split(":")
            pairs.append((parts[0].replace("\1", ":"), parts[1]))
    return pairs


def is_repo_path(source: str) -> bool:
    return source.startswith(".")


def builds_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    context = COMPOSE_DIR / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return (context / dockerfile).resolve() == DOCKERFILE


def is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "")) == "no"


def has_healthcheck(service: dict[str, Any]) -> bool:
    healthcheck = service.get("healthcheck")
    if healthcheck is not None:
        return not healthcheck.get("disable", False) and healthcheck.get("test") != ["NONE"]
    return builds_our_image(service) and bool(parse_dockerfile().healthcheck)


def mebibytes(size: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(size).strip().lower())
    assert match, f"cannot read the memory size {size!r}"
    number, unit = float(match.group(1)), match.group(2)
    return number * {"": 1 / 2**20, "b": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[unit]


def memory_limit(service: dict[str, Any]) -> float | None:
    limit = service.get("mem_limit")
    if limit is None:
        limit = service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    return None if limit is None else mebibytes(limit)


# --- docker-compose config ------------------------------------------------------------------


def compose_commands() -> list[list[str]]:
    """Every compose implementation on this machine: v1 (Debian's docker-compose) and/or the
    v2 plugin (`docker compose`)."""
    found = []
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            found.append([docker, "compose"])
    require(
        bool(found),
        "no docker-compose on PATH (Debian: apt-get install docker-compose; `make test` does)",
    )
    return found


def compose_config(
    command: list[str], name: str, env: dict[str, str], tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    # An empty env file: a developer's compose/.env must not fill in what the test leaves out.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAKU_", "COMPOSE_"))}
    for variable in PROD_ENV:
        base.pop(variable, None)
    return subprocess.run(
        [*command, "--env-file", str(empty), "-f", str(COMPOSE_FILES[name]), *extra, "config"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_compose_accepts_every_file(name: str, tmp_path: Path) -> None:
    env = PROD_ENV if name == "prod" else {}
    profiles = ["--profile", "grafana"] if name == "dev" else ["--profile", "backup"]
    for command in compose_commands():
        result = compose_config(command, name, env, tmp_path, *profiles)
        assert result.returncode == 0, result.stderr
        assert "is not set" not in result.stderr, result.stderr  # no variable left blank
        rendered = yaml.safe_load(result.stdout)
        assert set(rendered["services"]) == set(services(load_compose(name)))


def test_prod_refuses_to_start_without_any_of_its_settings(tmp_path: Path) -> None:
    for command in compose_commands():
        for missing in PROD_ENV:
            env = {k: v for k, v in PROD_ENV.items() if k != missing}
            result = compose_config(command, "prod", env, tmp_path)
            assert result.returncode != 0, f"prod.yaml started without {missing}"
            assert missing in result.stderr, result.stderr


# --- the project's own rules ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_everything_a_service_mounts_or_builds_from_is_in_the_repo(name: str) -> None:
    document = load_compose(name)
    named_volumes = set(document.get("volumes") or {})
    for service_name, service in services(document).items():
        build = service.get("build")
        if build is not None:
            assert builds_our_image(service), f"{service_name} builds from an unknown Dockerfile"
        repo_mounts: dict[str, Path] = {}
        for source, target in volume_pairs(service):
            if is_repo_path(source):
                path = (COMPOSE_DIR / source).resolve()
                assert path.exists(), f"{service_name} mounts {source}, which is not in the repo"
                assert path.is_relative_to(REPO)
                repo_mounts[target] = path
            elif source.startswith("${"):
                assert name == "prod", f"{service_name}: host paths belong to prod only"
                assert source.startswith("${PAKU_DATA_ROOT"), f"{service_name}: {source}"
            else:
                assert source in named_volumes, f"{service_name}: undeclared volume {source}"
                assert name == "dev", f"{service_name}: prod keeps its data in bind mounts"
        # Files the container is told to run or read from those mounts exist too.
        referenced = [
            *strings(service.get("entrypoint")),
            *strings(service.get("command")),
            *strings((service.get("healthcheck") or {}).get("test")),
            *environment(service).values(),
        ]
        for token in referenced:
            for target, path in repo_mounts.items():
                if token.startswith(target + "/"):
                    inside = path / token.removeprefix(target + "/")
                    assert inside.exists(), f"{service_name} uses {token}: no {inside}"
    if name == "dev":
        provider = yaml.safe_load(
            (GRAFANA_DIR / "provisioning" / "dashboards" / "paku.yaml").read_text()
        )
        grafana_mounts = {
            target: source for source, target in volume_pairs(services(document)["grafana"])
        }
        path = provider["providers"][0]["options"]["path"]
        assert path in grafana_mounts, "the dashboards provider reads a directory not mounted"
        assert list((COMPOSE_DIR / grafana_mounts[path]).glob("*.json"))


def test_the_image_is_built_from_files_the_build_context_holds() -> None:
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", ".dockerignore allows only what the image needs"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert not {".env", ".git", "var", ".venv"} & allowed
    for sources, from_stage in parse_dockerfile().copies:
        if from_stage:
            continue
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repo"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_every_variable_is_documented_or_given_a_default(name: str) -> None:
    documented = env_example_names()
    used: set[str] = set()
    for value in strings(load_compose(name)):
        for match in VARIABLE.finditer(value.replace("$$", "")):
            variable, operator = match.group(1), match.group(2)
            used.add(variable)
            if operator in (":-", "-"):
                continue  # set in the file
            assert variable in documented, f"{name}.yaml: ${{{variable}}} is not in .env.example"
    if name == "prod":
        assert used >= PROD_REQUIRED
        operations = (REPO / "docs" / "operations.md").read_text()
        for variable in used:
            assert variable in operations, f"docs/operations.md does not explain {variable}"


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_dependencies_wait_for_health_or_completion(name: str) -> None:
    all_services = services(load_compose(name))
    for service_name, service in all_services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{service_name}: depends_on needs conditions"
        for dependency, how in depends_on.items():
            assert dependency in all_services, f"{service_name} depends on unknown {dependency}"
            condition = (how or {}).get("condition")
            target = all_services[dependency]
            if condition == HEALTHY_CONDITION:
                assert has_healthcheck(target), f"{dependency} has no healthcheck to wait for"
            elif condition == ONE_SHOT_CONDITION:
                assert is_one_shot(target), f"{dependency} is waited for but is not a one-shot"
            else:
                pytest.fail(f"{service_name} -> {dependency}: condition {condition!r}")


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_long_running_services_have_healthchecks_and_one_shots_none(name: str) -> None:
    all_services = services(load_compose(name))
    waited_for = {
        dependency
        for service in all_services.values()
        for dependency, how in (service.get("depends_on") or {}).items()
        if (how or {}).get("condition") == ONE_SHOT_CONDITION
    }
    for service_name, service in all_services.items():
        if is_one_shot(service):
            # A one-shot is either a start step or run on demand (a profile), never left over.
            assert service_name in waited_for or service.get("profiles"), service_name
            # Built from our image it would inherit the HTTP check, which a step never passes.
            assert not has_healthcheck(service), f"{service_name}: disable its healthcheck"
        else:
            assert has_healthcheck(service), f"{service_name} has no healthcheck"
        if builds_our_image(service):
            # The generated pid file holds the broker container's PID 1 and paku-iot SIGHUPs
            # it from its own container, where it names paku-iot itself: harmless only while
            # paku-iot is PID 1 (no init process that would forward the signal to it).
            assert not service.get("init"), f"{service_name}: no init process, see the comment"


def test_prod_restarts_rotates_logs_and_fits_the_memory_of_a_small_vm() -> None:
    total = 0.0
    for service_name, service in services(load_compose("prod")).items():
        if is_one_shot(service):
            assert service["restart"] == "no"
        else:
            assert service.get("restart") == "unless-stopped", service_name
        limit = memory_limit(service)
        assert limit is not None, f"{service_name} has no memory limit"
        # Docker's default json-file log grows without bound on a small disk.
        assert service.get("logging", {}).get("options", {}).get("max-size"), service_name
        total += limit
    # Everything at once, one-shots included, leaves a 2 GB VM room for the OS and caches.
    assert total <= 1536, f"memory limits add up to {total:.0f} MiB"


def test_prod_holds_no_secrets_and_requires_each_one() -> None:
    text = COMPOSE_FILES["prod"].read_text()
    document = load_compose("prod")
    assert "dev-only" not in text
    required = {m.group(1) for m in VARIABLE.finditer(text) if m.group(2) in (":?", "?")}
    for value in strings(document):
        for match in VARIABLE.finditer(value):
            if match.group(2) not in (":?", "?"):
                assert match.group(2) is None, f"prod.yaml gives {match.group(1)} a default"
                assert match.group(1) in required, f"{match.group(1)} is never required"
    for service_name, service in services(document).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", value), f"{service_name} {key}"
            for password in re.findall(r"://[^:/@]+:([^@]+)@", value):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", password), f"{service_name} {key}"


def test_prod_is_tls_fronted_logs_json_and_keeps_its_data_under_one_root() -> None:
    prod = services(load_compose("prod"))
    for service_name, service in prod.items():
        if builds_our_image(service) and service_name != "broker-init":
            env = environment(service)
            assert env["PAKU_LOG_FORMAT"] == "json"
            assert env["PAKU_ENV"] == "production"
            assert re.fullmatch(r"https://\$\{PAKU_DOMAIN(:\?[^}]*)?\}", env["PAKU_PUBLIC_URL"])
    published = {
        name: [str(port) for port in service.get("ports", [])] for name, service in prod.items()
    }
    assert published.pop("caddy") == ["80:80", "443:443", "443:443/udp"]
    assert published.pop("mosquitto") == ["8883:8883"]  # plain MQTT stays inside
    assert not any(published.values()), f"only Caddy and MQTTS are published: {published}"
    mosquitto = environment(prod["mosquitto"])
    assert mosquitto["MOSQUITTO_TLS_CERT"].endswith(".crt")
    assert mosquitto["MOSQUITTO_TLS_KEY"].endswith(".key")
    assert mosquitto["MOSQUITTO_TLS_PORT"] == "8883"

    caddyfile = (COMPOSE_DIR / "caddy" / "Caddyfile").read_text()
    assert re.search(r"^\{\$PAKU_DOMAIN\} \{", caddyfile, re.MULTILINE)
    assert "reverse_proxy paku-iot:8000" in caddyfile
    assert re.search(r"@internal path /metrics", caddyfile)
    assert "respond @internal 404" in caddyfile
    assert ("./caddy/Caddyfile", "/etc/caddy/Caddyfile") in volume_pairs(prod["caddy"])
    assert "PAKU_DOMAIN" in environment(prod["caddy"])


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_the_broker_directory_is_mounted_at_the_same_path_everywhere(name: str) -> None:
    all_services = services(load_compose(name))
    init = all_services["broker-init"]
    assert init["command"][init["command"].index("--out") + 1] == BROKER_MOUNT
    assert init["command"][init["command"].index("--user") + 1] == "mosquitto"
    env = PROD_ENV if name == "prod" else {}

    def broker_sources(service: dict[str, Any]) -> set[str]:
        return {interpolate(s, env) for s, t in volume_pairs(service) if t == BROKER_MOUNT}

    source = broker_sources(init)
    assert len(source) == 1
    for service_name in ("mosquitto", "paku-iot"):
        service = all_services[service_name]
        assert broker_sources(service) == source, service_name
        assert environment(service)["PAKU_BROKER_DIR"] == BROKER_MOUNT, service_name
    for service_name, service in all_services.items():
        mounts = [t for s, t in volume_pairs(service) if interpolate(s, env) in source]
        assert mounts in ([], [BROKER_MOUNT]), f"{service_name} mounts the broker dir at {mounts}"
    assert all_services["mosquitto"]["entrypoint"] == [
        "/bin/sh",
        "/paku/mosquitto/entrypoint.sh",
    ]
    assert "PAKU_INSTANCE_ID" in environment(all_services["paku-iot"])


def test_the_dockerfile_builds_a_slim_non_root_image_with_a_healthcheck() -> None:
    dockerfile = parse_dockerfile()
    assert len(dockerfile.stages) >= 2, "multi-stage: build the wheel, then a clean runtime"
    assert dockerfile.stages[-1].startswith("python:3.11-slim")
    assert any(from_stage for _, from_stage in dockerfile.copies)
    assert dockerfile.user not in (None, "root", "0")
    assert dockerfile.cmd == ["paku-iot", "serve"]
    assert "8000" in dockerfile.expose
    assert dockerfile.healthcheck[:2] == ["python", "-c"]
    assert "/health" in dockerfile.healthcheck[2]
    assert dockerfile.env["PAKU_HTTP_HOST"] == "0.0.0.0"
    assert dockerfile.env["PAKU_DATA_DIR"] == DATA_MOUNT
    assert f"PAKU_UID={MOSQUITTO_IMAGE_UID}" in DOCKERFILE.read_text()


def test_grafana_is_provisioned_with_the_database_and_a_dashboard() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "paku-postgres.yaml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    dev = services(load_compose("dev"))
    assert dev["grafana"]["profiles"] == ["grafana"]
    postgres_env = environment(dev["postgres"])
    source = datasources[0]
    assert source["url"] == "postgres:5432"
    assert source["user"] == postgres_env["POSTGRES_USER"]
    assert source["jsonData"]["database"] == postgres_env["POSTGRES_DB"]
    assert source["secureJsonData"]["password"] == postgres_env["POSTGRES_PASSWORD"]
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "paku-overview.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids


def grafana_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "paku-overview.json").read_text())
    return [
        (panel["title"], target["rawSql"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def expand_grafana_macros(sql: str) -> str:
    window = "now() - interval '6 hours'"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {window} AND now()", sql)
    sql = sql.replace("$__timeFrom()", f"({window})")
    assert "$__" not in sql, f"a Grafana macro the test does not expand: {sql}"
    return sql


async def test_the_dashboard_queries_run_on_the_migrated_schema(empty_pg_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_pg_database)
    conn = await asyncpg.connect(empty_pg_database)
    try:
        now = dt.datetime.now(dt.UTC)
        await conn.execute(
            "INSERT INTO devices (id, model, metadata, created_at, online, fw_version, "
            "last_seen_at) VALUES ('d1', 'm', '{}', $1, true, '1.0.0', $1)",
            now,
        )
        await conn.execute(
            "INSERT INTO telemetry (device_id, ts, received_at, payload) "
            "VALUES ('d1', $1, $1, '{\"t\": 1}')",
            now,
        )
        for title, sql in grafana_queries():
            rows = await conn.fetch(expand_grafana_macros(sql))
            if title in ("Devices online", "Messages per minute", "Last seen"):
                assert rows, f"{title}: no rows for a device that is online and sending"
    finally:
        await conn.close()


# --- running what the containers run -------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass
class EntrypointBroker:
    """Mosquitto as the broker container runs it: compose/mosquitto/entrypoint.sh, here with
    a shell of this machine and in its own process group (mosquitto and its watcher)."""

    process: subprocess.Popen[bytes]
    port: int
    broker_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the group (as `docker stop` reaches PID 1), then make sure the watcher
        is gone too."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = group_members(self.process.pid)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        assert not leftover, f"processes left behind: {leftover}\n{self.output()}"


def broker_config(out: Path, port: int, tmp_path: Path, compose: str = "dev") -> None:
    """The compose files' broker-init step, on this machine: listening on the loopback only,
    and running as this user (there is no `mosquitto` user to share files with here)."""
    command = services(load_compose(compose))["broker-init"]["command"]
    args = [
        "127.0.0.1" if arg == "0.0.0.0" else getpass.getuser() if arg == "mosquitto" else arg
        for arg in command
    ]
    args = [str(out) if arg == BROKER_MOUNT else arg for arg in args]
    result = run_command(args, {"PAKU_MQTT_PORT": str(port)}, tmp_path)
    assert result.returncode == 0, result.stderr


def venv_tool(name: str) -> str:
    """A console script as the image's PATH (/opt/paku/bin first) finds it: in this venv."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def run_command(
    command: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool(command[0]), *command[1:]],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_entrypoint(
    tmp_path: Path,
    *,
    shell: list[str],
    path: str | None = None,
    extra_env: dict[str, str] | None = None,
    compose: str = "dev",
    port: int | None = None,
) -> EntrypointBroker:
    try:
        mosquitto = find_mosquitto(None)
    except Exception as exc:
        require(False, str(exc))
        raise
    port = port or free_port()
    broker_dir = tmp_path / "broker"
    broker_config(broker_dir, port, tmp_path, compose)
    log = tmp_path / "entrypoint.log"
    env = {
        **os.environ,
        "PAKU_BROKER_DIR": str(broker_dir),
        "MOSQUITTO_RUN_DIR": str(tmp_path / "run"),
        "MOSQUITTO_BIN": mosquitto,
        **(extra_env or {}),
    }
    if path is not None:
        env["PATH"] = path
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*shell, str(ENTRYPOINT)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: mosquitto (exec'd) and the watcher
        )
    broker = EntrypointBroker(process, port, broker_dir, log)
    if not wait_for_port_sync(port):
        broker.stop()
        pytest.fail(f"mosquitto did not start:\n{broker.output()}")
    return broker


@pytest.fixture
def entrypoint_brokers() -> Iterator[list[EntrypointBroker]]:
    started: list[EntrypointBroker] = []
    yield started
    for broker in started:
        broker.stop()


def busybox_path(tmp_path: Path) -> str:
    """A PATH of busybox applets only, as in the Alpine-based eclipse-mosquitto image."""
    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox is not installed (Debian: apt-get install busybox)")
    assert busybox is not None
    applets = tmp_path / "busybox-bin"
    applets.mkdir()
    names = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for name in names.stdout.split():
        (applets / name).symlink_to(busybox)
    return str(applets)


def run_broker_healthcheck(shell: list[str], broker_dir: Path) -> int:
    """compose/mosquitto/healthcheck.sh, as the mosquitto service's healthcheck runs it."""
    return subprocess.run(
        [*shell, str(BROKER_HEALTHCHECK)],
        env={**os.environ, "PAKU_BROKER_DIR": str(broker_dir)},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


def wait_until_group_gone(pgid: int, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return group_members(pgid)


SHELLS: dict[str, Callable[[Path], tuple[list[str], str | None]]] = {
    "sh": lambda _tmp: (["sh"], None),
    "busybox": lambda tmp: ([str(Path(busybox_path(tmp)) / "sh")], str(tmp / "busybox-bin")),
}


@pytest.mark.parametrize("shell", sorted(SHELLS))
async def test_the_watcher_reloads_mosquitto_when_the_password_file_changes(
    shell: str, tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    command, path = SHELLS[shell](tmp_path)
    broker = start_entrypoint(tmp_path, shell=command, path=path)
    entrypoint_brokers.append(broker)

    with pytest.raises(ConnectRefused):
        await DeviceClient("127.0.0.1", broker.port, "hand-1", "typed-by-hand").connect()

    # A device added to the password file by hand (not by paku-iot, which would signal the
    # broker itself on this machine): only the watcher can make the broker see it.
    with (broker.broker_dir / "passwd").open("a") as passwd:
        passwd.write(f"hand-1:{hash_password('typed-by-hand')}\n")

    async def connects() -> None:
        try:
            device = await DeviceClient(
                "127.0.0.1", broker.port, "hand-1", "typed-by-hand"
            ).connect()
        except ConnectRefused as exc:
            raise AssertionError(str(exc)) from None
        await device.disconnect()

    await eventually(connects, timeout=15)
    assert "password or ACL file changed: reloaded mosquitto" in broker.output()
    assert broker.process.poll() is None, "a reload must not stop the broker"

    assert await asyncio.to_thread(run_broker_healthcheck, command, broker.broker_dir) == 0

    # The broker exits (the container stops): the watcher goes with it by itself.
    watcher = [pid for pid in group_members(broker.process.pid) if pid != broker.process.pid]
    assert watcher, "no watcher running next to mosquitto"
    broker.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(broker.process.wait, 10) == 0
    left = await asyncio.to_thread(wait_until_group_gone, broker.process.pid)
    assert not left, "the watcher outlived the broker"
    assert await asyncio.to_thread(run_broker_healthcheck, command, broker.broker_dir) != 0


def self_signed(directory: Path, serial: int) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    for path, data in (
        (
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        (cert_path, certificate.public_bytes(serialization.Encoding.PEM)),
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(path)  # as a renewal replaces them
    return cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER)


def served_certificate(port: int, ca_file: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_the_tls_listener_comes_from_the_snippet_and_renewals_reload(
    tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    cert, key, first = self_signed(tmp_path / "certs", serial=1)
    tls_port = free_port()
    broker = start_entrypoint(
        tmp_path,
        shell=["sh"],
        extra_env={
            "MOSQUITTO_TLS_CERT": str(cert),
            "MOSQUITTO_TLS_KEY": str(key),
            "MOSQUITTO_TLS_PORT": str(tls_port),
        },
    )
    entrypoint_brokers.append(broker)
    assert wait_for_port_sync(tls_port), broker.output()
    assert served_certificate(tls_port, cert) == first

    ca_copy = tmp_path / "first-ca.pem"
    shutil.copy(cert, ca_copy)
    _, _, second = self_signed(tmp_path / "certs", serial=2)

    async def renewed() -> None:
        try:
            assert served_certificate(tls_port, cert) == second
        except (OSError, ssl.SSLError) as exc:
            raise AssertionError(str(exc)) from None

    await eventually(renewed, timeout=15)
    assert "TLS certificate changed: reloaded mosquitto" in broker.output()
    effective = (tmp_path / "run" / "mosquitto.conf").read_text()
    assert f"listener {tls_port}\n" in effective
    assert "@TLS_" not in effective


def test_certificates_that_appear_later_restart_the_broker_with_tls(
    tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    certs = tmp_path / "certs"
    broker = start_entrypoint(
        tmp_path,
        shell=["sh"],
        extra_env={
            "MOSQUITTO_TLS_CERT": str(certs / "fullchain.pem"),
            "MOSQUITTO_TLS_KEY": str(certs / "privkey.pem"),
            "MOSQUITTO_TLS_PORT": str(free_port()),
        },
    )
    entrypoint_brokers.append(broker)
    assert "starting without the TLS listener" in broker.output()
    self_signed(certs, serial=1)
    # The broker stops so that the restart policy starts it again, now with the listener.
    assert broker.process.wait(15) == 0, broker.output()
    assert "stopping mosquitto so that it starts again" in broker.output()


# The broker-init, migrate and serve steps as the compose files run them, as processes here.
# Container paths map to the test's directories, host names to the loopback.


def container_env(
    service: dict[str, Any], compose_env: dict[str, str], paths: dict[str, Path]
) -> dict[str, str]:
    env = {k: interpolate(v, compose_env) for k, v in environment(service).items()}
    for key, value in env.items():
        for container_path, local in paths.items():
            if value == container_path or value.startswith(container_path + "/"):
                env[key] = str(local) + value.removeprefix(container_path)
    return env


def start_image_command(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [venv_tool(cmd[0]), *cmd[1:]],
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_image_healthcheck(
    dockerfile: Dockerfile, http_port: int
) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, with this venv's python for the image's."""
    assert dockerfile.healthcheck[0] == "python"
    return subprocess.run(
        [sys.executable, *dockerfile.healthcheck[1:]],
        env={**os.environ, "PAKU_HTTP_PORT": str(http_port)},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
async def test_the_image_command_and_the_start_steps_run_as_plain_processes(
    name: str,
    tmp_path: Path,
    empty_pg_database: str,
    entrypoint_brokers: list[EntrypointBroker],
) -> None:
    compose = services(load_compose(name))
    compose_env = PROD_ENV if name == "prod" else {}
    dockerfile = parse_dockerfile()
    broker = start_entrypoint(tmp_path, shell=["sh"], compose=name)
    entrypoint_brokers.append(broker)
    paths = {BROKER_MOUNT: broker.broker_dir, DATA_MOUNT: tmp_path / "data"}
    http_port = free_port()
    local = {
        "PAKU_DATABASE_URL": empty_pg_database,
        "PAKU_MQTT_HOST": "127.0.0.1",
        "PAKU_MQTT_PORT": str(broker.port),
        "PAKU_HTTP_HOST": "127.0.0.1",
        "PAKU_HTTP_PORT": str(http_port),
    }
    image_env = {
        k: str(paths.get(v, v)) for k, v in dockerfile.env.items() if k.startswith("PAKU_")
    }

    migrate = compose["migrate"]
    migrate_env = {**image_env, **container_env(migrate, compose_env, paths), **local}
    migrated = run_command(migrate["command"], migrate_env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout

    service = compose["paku-iot"]
    assert "command" not in service, "paku-iot runs the image's CMD"
    serve_env = {**image_env, **container_env(service, compose_env, paths), **local}
    token = serve_env["PAKU_ADMIN_TOKEN"]
    server = start_image_command(dockerfile.cmd, serve_env, tmp_path)
    try:

        async def healthy() -> None:
            assert server.poll() is None, "paku-iot serve exited"
            result = await asyncio.to_thread(run_image_healthcheck, dockerfile, http_port)
            assert result.returncode == 0, result.stderr

        await eventually(healthy, timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            health = await client.get("/health")
            assert health.json()["status"] == "ok"
            if "PAKU_METRICS_TOKEN" in serve_env:  # prod: a scraper's own token
                assert (await client.get("/metrics")).status_code == 401
                metrics_token = serve_env["PAKU_METRICS_TOKEN"]
                scraped = await client.get(
                    "/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
                )
                assert scraped.status_code == 200, scraped.text
        password = await device_round_trip(
            f"http://127.0.0.1:{http_port}", broker.port, "img-1", token
        )

        broker.stop()  # the broker goes away: /health says 503, the check fails

        async def unhealthy() -> None:
            result = await asyncio.to_thread(run_image_healthcheck, dockerfile, http_port)
            assert result.returncode != 0

        await eventually(unhealthy, timeout=30)

        # The container restarts: the same directory and port, and paku-iot is healthy again
        # (it reconnects by itself) with the devices it knew.
        broker = start_entrypoint(tmp_path, shell=["sh"], compose=name, port=broker.port)
        entrypoint_brokers.append(broker)
        await eventually(healthy, timeout=30)
        device = await DeviceClient("127.0.0.1", broker.port, "img-1", password).connect()
        await device.disconnect()
    finally:
        code, stderr = stop(server, signal.SIGTERM)
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    if serve_env.get("PAKU_LOG_FORMAT") == "json":
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines
        for line in lines:
            assert isinstance(json.loads(line), dict), line
