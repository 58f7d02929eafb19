"""The runtime dependencies are locked and audited: requirements/runtime.txt pins every
package paku-iot needs at run time, each with hashes, at versions pyproject.toml allows; the
minimums in pyproject.toml are above every advisory in requirements/advisories.toml; the
image and `make install` install from the lock with hash checking; and the advisory scan
(`make audit`, scripts/audit_deps.py) fails on a known-vulnerable pin and when it cannot ask
PyPI."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import require
from tests.support.compose import parse_dockerfile

REPO = Path(__file__).resolve().parents[1]
LOCK_PATH = "requirements/runtime.txt"
LOCK = REPO / LOCK_PATH
SCRIPT = REPO / "scripts" / "audit_deps.py"


def audit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


audit_deps = audit_module()


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def lock_text_pins() -> dict[str, tuple[Version, set[str], str]]:
    """name -> (version, hashes, marker) straight from the lock's text."""
    pins = {}
    for pin in audit_deps.read_pins(LOCK):
        pins[pin.name] = (pin.version, pin.hashes, "")
    markers = re.findall(r"^([A-Za-z0-9._-]+)==\S+ ; (.+?) \\$", LOCK.read_text(), re.M)
    for name, marker in markers:
        version, hashes, _ = pins[canonicalize_name(name)]
        pins[canonicalize_name(name)] = (version, hashes, marker)
    return pins


def applies_here(marker: str) -> bool:
    return not marker or Requirement(f"x ; {marker}").marker.evaluate()  # type: ignore[union-attr]


def test_the_lock_pins_every_package_with_hashes() -> None:
    pins = audit_deps.read_pins(LOCK)
    assert len(pins) > 20
    for pin in pins:
        assert pin.hashes, f"{pin.name} {pin.version}: no --hash in {LOCK_PATH}"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{pin.name}: {digest}"


def test_every_runtime_dependency_is_in_the_lock() -> None:
    """pyproject.toml's dependencies, their extras' and all they need in turn (as the
    installed packages declare it), are pinned."""
    locked = {pin.name for pin in audit_deps.read_pins(LOCK)}
    environment = default_environment()
    pending = [(req, set(req.extras)) for req in runtime_requirements()]
    seen: set[str] = set()
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is needed at run time but not in {LOCK_PATH}"
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for line in importlib.metadata.requires(name) or []:
            needed = Requirement(line)
            applies = needed.marker is None or any(
                needed.marker.evaluate({**environment, "extra": extra}) for extra in {"", *extras}
            )
            if applies:
                pending.append((needed, set(needed.extras)))
    assert len(seen) > 20  # the walk went through the tree, not just the top


def test_locked_versions_satisfy_pyproject() -> None:
    pins = {pin.name: pin.version for pin in audit_deps.read_pins(LOCK)}
    for requirement in runtime_requirements():
        version = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCK_PATH} pins {requirement.name} {version}, outside {requirement}: make lock"
        )


def minimum(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(floors) if floors else None


def test_minimums_and_pins_are_above_known_advisories() -> None:
    advisories = audit_deps.load_advisories()
    direct = {canonicalize_name(r.name): r for r in runtime_requirements()}
    pins = {pin.name: pin.version for pin in audit_deps.read_pins(LOCK)}
    assert {"starlette", "python-multipart"} <= {a["package"] for a in advisories}
    for advisory in advisories:
        name = canonicalize_name(advisory["package"])
        fixed = Version(advisory["fixed"])
        assert name in pins, f"advisories.toml names {name}, which is not a dependency"
        assert pins[name] >= fixed, f"{LOCK_PATH}: {name} {pins[name]} has {advisory['id']}"
        if name in direct:
            floor = minimum(direct[name])
            assert floor is not None, f"pyproject.toml sets no minimum for {name}"
            assert floor >= fixed, (
                f"pyproject.toml allows {direct[name]}, below {fixed} ({advisory['id']})"
            )


def test_this_environment_runs_the_locked_versions() -> None:
    """`make install` adds the dev extras after the lock: they must not move a locked pin."""
    for name, (version, _, marker) in lock_text_pins().items():
        if not applies_here(marker):
            continue
        installed = Version(importlib.metadata.version(name))
        assert installed == version, f"{name}: {installed} installed, {version} locked"


def test_the_image_and_make_install_install_from_the_lock_with_hashes() -> None:
    dockerfile = parse_dockerfile()
    assert ([LOCK_PATH], False) in dockerfile.copies
    installs = [
        (stage, command)
        for stage, run in dockerfile.runs
        for command in run.split("&&")
        if re.search(r"\bpip install\b", command)
    ]
    assert installs
    locked = [command for stage, command in installs if stage == 0 and f"-r {LOCK_PATH}" in command]
    assert locked, "the image does not install the lock"
    for command in locked:
        assert "--require-hashes" in command.split(), command
        assert "--no-deps" in command.split(), command
    for _, command in installs:  # nothing else pulls in a dependency past the lock
        assert "--no-deps" in command.split(), f"Dockerfile: {command.strip()}"

    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^LOCK := requirements/runtime\.txt$", makefile, re.M)
    stamp = re.search(r"^\$\(STAMP\): (.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp, "no $(STAMP) rule in the Makefile"
    assert "$(LOCK)" in stamp.group(1).split(), "the install stamp does not follow the lock"
    recipe = stamp.group(2)
    assert "--require-hashes --no-deps -r $(LOCK)" in recipe
    assert recipe.index("-r $(LOCK)") < recipe.index("'.[dev]'")
    assert re.search(r"^test: .*\baudit\b", makefile, re.M), "make test does not run the audit"


def run_audit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_audit_fails_on_known_vulnerable_pins(tmp_path: Path) -> None:
    """starlette 0.36.0 has advisories fixed in later releases (found through the advisory
    list where PyPI serves no per-release JSON); pycrypto 2.6.1, PyPI's newest release of
    it, has unfixed ones that PyPI's feed lists."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("starlette==0.36.0\npycrypto==2.6.1\n")
    result = run_audit(str(requirements))
    require(result.returncode != 2, f"PyPI's vulnerability feed unreachable: {result.stderr}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "starlette 0.36.0: CVE-2024-47874" in result.stdout
    assert re.search(r"pycrypto 2\.6\.1: .*CVE-2013-7459.*\[(PyPI|pip-audit)", result.stdout)


def test_an_audit_that_cannot_ask_pypi_fails(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("starlette==1.10.0\n")
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens
    proxies = {"HTTPS_PROXY": unreachable, "https_proxy": unreachable, "NO_PROXY": ""}
    result = run_audit(str(requirements), env={**proxies, "no_proxy": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no known vulnerabilities" not in result.stdout
