"""The compose files and the Dockerfile, checked statically, without a Docker engine (there
is none here or in CI): `docker-compose config` accepts every compose file, and the
project's own rules hold (files that services mount or build from exist, every `${VAR}` is
documented, healthy dependencies, healthchecks, restart policies and memory limits, no
secrets in prod, a slim non-root image with a healthcheck, Caddy's body caps as large as
the settings' defaults)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from paku_iot.settings import Settings
from paku_iot.web.api.routes.ota import FIRMWARE_UPLOAD_PATH
from paku_iot.web.app import MULTIPART_OVERHEAD_BYTES
from tests.support import require
from tests.support.compose import (
    BROKER_MOUNT,
    COMPOSE_DIR,
    COMPOSE_FILES,
    DATA_MOUNT,
    DOCKERFILE,
    GRAFANA_DIR,
    HEALTHY_CONDITION,
    MOSQUITTO_IMAGE_UID,
    ONE_SHOT_CONDITION,
    PROD_ENV,
    PROD_REQUIRED,
    REPO,
    SECRET_NAME,
    VARIABLE,
    builds_our_image,
    env_example_names,
    environment,
    has_healthcheck,
    interpolate,
    is_one_shot,
    is_repo_path,
    load_compose,
    memory_limit,
    parse_dockerfile,
    services,
    strings,
    volume_pairs,
)

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


def test_dev_starts_a_crashed_service_again() -> None:
    """As prod does: a service killed by the kernel (out of memory) or crashing comes back;
    tests/containers/test_dev_faults.py crashes each on a real engine."""
    for service_name, service in services(load_compose("dev")).items():
        if is_one_shot(service):
            assert service["restart"] == "no"
        else:
            assert service.get("restart") == "unless-stopped", service_name


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


# Caddy's sizes (humanize.ParseBytes): MiB and the like are powers of 1024, MB of 1000.
CADDY_SIZE = re.compile(r"(\d+)\s*(B|[KMG]i?B)?", re.IGNORECASE)
CADDY_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
CADDY_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3}
MIB = 1024 * 1024


def caddy_size(text: str) -> int:
    match = CADDY_SIZE.fullmatch(text)
    assert match, f"a size the test cannot read: {text}"
    return int(match[1]) * CADDY_UNITS[(match[2] or "b").lower()]


def caddy_body_caps(caddyfile: str) -> dict[tuple[bool, frozenset[str]], int]:
    """Each `request_body @matcher { max_size ... }`, by its matcher: (negated, its lines)."""
    matchers = {
        name: (
            bool(negated),
            frozenset(" ".join(line.split()) for line in body.splitlines()) - {""},
        )
        for name, negated, body in re.findall(r"^\s*@(\w+)\s+(not\s+)?\{([^}]*)\}", caddyfile, re.M)
    }
    caps = re.findall(r"^\s*request_body\s+@(\w+)\s*\{\s*max_size\s+(\S+)\s*\}", caddyfile, re.M)
    assert len(caps) == len({name for name, _ in caps}), caps
    return {matchers[name]: caddy_size(size) for name, size in caps}


def test_caddy_caps_request_bodies_as_the_settings_defaults_do() -> None:
    """Caddy refuses a body before it crosses to paku-iot: the firmware upload at the whole
    MiB just above what paku-iot accepts (the image cap plus the multipart overhead), every
    other body at PAKU_HTTP_MAX_BODY_BYTES. A default changed without the Caddyfile fails."""
    caps = caddy_body_caps((COMPOSE_DIR / "caddy" / "Caddyfile").read_text())
    upload = frozenset({"method POST", f"path {FIRMWARE_UPLOAD_PATH}"})
    assert set(caps) == {(False, upload), (True, upload)}, caps  # the upload, and all else
    firmware_default = Settings.model_fields["ota_max_firmware_bytes"].default
    body_default = Settings.model_fields["http_max_body_bytes"].default
    accepted = firmware_default + MULTIPART_OVERHEAD_BYTES  # what paku-iot reads of an upload
    assert caps[(False, upload)] == -(-accepted // MIB) * MIB, (caps, accepted)
    assert caps[(True, upload)] == body_default, (caps, body_default)


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


def test_dev_publishes_its_ports_on_the_loopback_only() -> None:
    dev = services(load_compose("dev"))
    published = {
        name: [str(port) for port in service.get("ports", [])] for name, service in dev.items()
    }
    for name in ("paku-iot", "mosquitto", "grafana"):
        assert published[name], name
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_paku_iot_connects_as_the_application_role_made_before_migrate(name: str) -> None:
    """db-init (compose/postgres/roles.sh) makes paku_app, not a superuser, before migrate;
    everything built from our image connects as it, never as the postgres superuser."""
    document = services(load_compose(name))
    superuser = environment(document["postgres"])["POSTGRES_USER"]
    db_init = document["db-init"]
    assert db_init["entrypoint"] == ["bash", "/paku/postgres/roles.sh"]
    assert db_init["network_mode"] == "service:postgres"
    assert environment(db_init)["PGUSER"] == superuser
    assert str(db_init["restart"]) == "no"
    assert document["migrate"]["depends_on"]["db-init"]["condition"] == ONE_SHOT_CONDITION
    for service_name, service in document.items():
        url = environment(service).get("PAKU_DATABASE_URL")
        if url is None:
            continue
        user = url.split("://", 1)[1].split(":", 1)[0]
        assert user == "paku_app" != superuser, f"{service_name} connects as {user}"
