"""The container deployment's files as the compose tests read them: compose/dev.yaml and
compose/prod.yaml (parsed, with compose's `${VAR}` interpolation), the Dockerfile, and the
paths the containers share."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
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


@dataclass
class Dockerfile:
    stages: list[str] = field(default_factory=list)  # base image of each stage, ARGs resolved
    env: dict[str, str] = field(default_factory=dict)  # ENV of the last stage
    user: str | None = None
    expose: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)  # the exec form after CMD
    cmd: list[str] = field(default_factory=list)
    copies: list[tuple[list[str], bool]] = field(default_factory=list)  # sources, --from?
    runs: list[tuple[int, str]] = field(default_factory=list)  # stage index, shell command


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
        elif keyword == "RUN":
            parsed.runs.append((len(parsed.stages) - 1, rest))
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
