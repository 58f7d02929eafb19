"""A compose project on the real Docker engine, for the tests in tests/containers/: run
docker-compose on compose/dev.yaml or compose/prod.yaml under a project name of its own,
see each container's state and health, wait until every service is ready, and check that
`down` left nothing behind."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tests.support import require
from tests.support.compose import (
    COMPOSE_FILES,
    builds_our_image,
    load_compose,
    parse_dockerfile,
    services,
)
from tests.support.engine import ensure_images, start_engine

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HEALTHY_WITHIN = 300.0

State = tuple[str, int, str]  # status, exit code, health ("" without a healthcheck)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def default_services(compose: str) -> dict[str, dict[str, object]]:
    """The services `up` starts: those without a profile."""
    return {
        name: service
        for name, service in services(load_compose(compose)).items()
        if not service.get("profiles")
    }


def images_needed(compose: str) -> list[str]:
    """Every image the default services and the Dockerfile's stages start from."""
    names = [
        str(service["image"])
        for service in default_services(compose).values()
        if "image" in service and not builds_our_image(service)
    ]
    names += parse_dockerfile().stages
    return list(dict.fromkeys(names))


def prepare_engine(*composes: str) -> list[str]:
    """A Docker engine that answers, docker-compose, and the images the compose files need:
    what was done to get them (printed, for the test's log). Skips without an engine,
    except in CI (tests.support.require)."""
    reason = start_engine()
    require(reason is None, str(reason))
    require(shutil.which("docker-compose") is not None, "docker-compose is not installed")
    started = time.monotonic()
    wanted = [name for compose in composes for name in images_needed(compose)]
    done = ensure_images(dict.fromkeys(wanted))
    print(f"images ready in {time.monotonic() - started:.0f} s:", *done, sep="\n  ")
    return done


class ComposeProject:
    """One compose project: `docker-compose -f <files> -p <unique name>` with an environment
    (and optionally an --env-file, as compose/.env would be read in production)."""

    def __init__(
        self,
        compose: str,
        env: dict[str, str],
        *,
        overrides: tuple[Path, ...] = (),
        env_file: Path | None = None,
        project: str | None = None,
    ) -> None:
        self.compose_name = compose
        self.project = project or f"pakutest{secrets.token_hex(4)}"
        self.files = (COMPOSE_FILES[compose], *overrides)
        self.env = env
        self.env_file = env_file

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose"]
        for file in self.files:
            command += ["-f", str(file)]
        if self.env_file is not None:
            command += ["--env-file", str(self.env_file)]
        return subprocess.run(
            [*command, "-p", self.project, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def states(self) -> dict[str, State]:
        """Each container of the project: its service -> (status, exit code, health)."""
        ids = docker(
            "ps", "-a", "-q", "--filter", f"label={PROJECT_LABEL}={self.project}"
        ).stdout.split()
        if not ids:
            return {}
        template = (
            f'{{{{index .Config.Labels "{SERVICE_LABEL}"}}}} {{{{.State.Status}}}} '
            "{{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        )
        found = {}
        for line in docker("inspect", "--format", template, *ids).stdout.splitlines():
            service, status, code, *health = line.split()
            found[service] = (status, int(code), health[0] if health else "")
        return found

    def container(self, service: str) -> str:
        """The id of the service's one container."""
        ids = docker(
            "ps",
            "-a",
            "-q",
            "--filter",
            f"label={PROJECT_LABEL}={self.project}",
            "--filter",
            f"label={SERVICE_LABEL}={service}",
        ).stdout.split()
        assert len(ids) == 1, f"{service}: {ids}"
        return ids[0]

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label={PROJECT_LABEL}={self.project}"
        return {
            kind: docker(*command, "--filter", label).stdout.split()
            for kind, command in {
                "containers": ("ps", "-a", "-q"),
                "volumes": ("volume", "ls", "-q"),
                "networks": ("network", "ls", "-q"),
            }.items()
        }

    def print_logs(self, tail: str = "all") -> None:
        logs = self.compose("logs", "--no-color", "--timestamps", "--tail", tail)
        print(f"docker-compose logs of {self.project}:\n{logs.stdout}\n{logs.stderr}")


async def wait_until_ready(
    stack: ComposeProject, within: float = HEALTHY_WITHIN
) -> dict[str, State]:
    """Every default service healthy (or running, without a healthcheck), the one-shots
    (restart: "no") exited 0; fails at once when one of them cannot get there."""
    wanted = default_services(stack.compose_name)
    deadline = time.monotonic() + within
    states: dict[str, State] = {}
    while time.monotonic() < deadline:
        states = stack.states()
        ready = True
        for name, service in wanted.items():
            status, code, health = states.get(name, ("missing", 0, ""))
            if str(service.get("restart", "")) == "no":
                assert status != "exited" or code == 0, f"{name} exited {code}: {states}"
                ready = ready and status == "exited"
            elif status == "restarting":
                # Its restart policy at work (prod's broker restarts itself once its TLS
                # certificate exists); the health shown is the old run's until it is back.
                ready = False
            else:
                assert status not in ("exited", "dead"), f"{name} stopped: {states}"
                assert health != "unhealthy", f"{name} is unhealthy: {states}"
                ready = ready and status == "running" and health in ("healthy", "")
        if ready:
            return states
        await asyncio.sleep(1)
    raise AssertionError(f"not ready within {within:.0f} s: {states}")
