"""The advisory scan of `make audit`: known vulnerabilities in pinned requirements.

    python scripts/audit_deps.py [REQUIREMENTS ...]    (default: requirements/runtime.txt)

Each file is a pip requirements file of `name==version` pins (the lock, or a throwaway one).
Three sources, all of which must pass:

1. requirements/advisories.toml, offline: a pin below an advisory's `fixed` version fails.
2. pip-audit, which asks PyPI's vulnerability feed about each exact release
   (/pypi/NAME/VERSION/json). Any finding fails.
3. PyPI's project JSON (/pypi/NAME/json), for every pin: the release must be on PyPI and not
   yanked, every hash the file pins must be one PyPI publishes for that release, and the
   advisories PyPI lists for the project's newest release fail the pin when it is that
   release, or when they have no fix yet or a fix above the pin.

Where a network serves the per-release JSON (2) the scan is as complete as PyPI's feed. Where
it does not (this project's machines and CI reach only part of PyPI's JSON API: pip-audit
then skips every package as "not found"), PyPI tells the advisories of newest releases
only (3), and an advisory fixed in a release above a pin but below the newest is caught only
by requirements/advisories.toml (1). The script says which pins that applies to.

Exit status: 0 clean; 1 a known advisory, or a pin that PyPI does not have; 2 the scan could
not run (PyPI unreachable, pip-audit failing): never a pass, on a laptop or in CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "runtime.txt"
ADVISORIES = REPO / "requirements" / "advisories.toml"
PYPI = "https://pypi.org/pypi"
TIMEOUT = 20


@dataclass
class Pin:
    name: str  # canonical
    version: Version
    hashes: set[str] = field(default_factory=set)  # "sha256:<hex>"


class ScanError(Exception):
    """The scan could not run: exit 2."""


def read_pins(path: Path) -> list[Pin]:
    """The `name==version` lines of a requirements file, with their --hash options."""
    pins: list[Pin] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        words, logical = logical.split(), ""
        if not words or words[0].startswith("-"):
            continue
        spec = " ".join(w for w in words if not w.startswith("--hash="))
        requirement = Requirement(spec)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ScanError(f"{path}: {spec!r} is not pinned with ==")
        hashes = {w.removeprefix("--hash=") for w in words if w.startswith("--hash=")}
        pins.append(
            Pin(canonicalize_name(requirement.name), Version(specifiers[0].version), hashes)
        )
    return pins


def load_advisories(path: Path = ADVISORIES) -> list[dict[str, Any]]:
    advisories: list[dict[str, Any]] = tomllib.loads(path.read_text())["advisory"]
    return advisories


def listed_findings(pins: list[Pin], advisories: list[dict[str, Any]]) -> list[str]:
    found = []
    for pin in pins:
        for advisory in advisories:
            if canonicalize_name(advisory["package"]) == pin.name and pin.version < Version(
                advisory["fixed"]
            ):
                found.append(
                    f"{pin.name} {pin.version}: {advisory['id']} (fixed in {advisory['fixed']}): "
                    f"{advisory['summary']} [requirements/advisories.toml]"
                )
    return found


def pip_audit(path: Path, pins: list[Pin]) -> tuple[list[str], set[str]]:
    """pip-audit's findings, and the packages it skipped (no per-release JSON)."""
    hashed = all(pin.hashes for pin in pins)
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--disable-pip",
        "--require-hashes" if hashed else "--no-deps",
        "-r",
        str(path),
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        str(TIMEOUT),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise ScanError(f"pip-audit failed (exit {result.returncode}): {result.stderr}") from None
    found, skipped = [], set()
    for dependency in report["dependencies"]:
        if "skip_reason" in dependency:
            skipped.add(canonicalize_name(dependency["name"]))
            continue
        for vuln in dependency["vulns"]:
            aliases = ", ".join(vuln.get("aliases") or [])
            found.append(
                f"{dependency['name']} {dependency['version']}: {vuln['id']} ({aliases}) "
                f"fixed in {', '.join(vuln['fix_versions']) or 'no release yet'} [pip-audit]"
            )
    return found, skipped


def project_json(name: str) -> dict[str, Any]:
    url = f"{PYPI}/{name}/json"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            document: dict[str, Any] = json.load(response)
            return document
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as error:
        raise ScanError(f"PyPI did not answer for {name}: {error}") from error


def project_findings(pin: Pin, project: dict[str, Any]) -> tuple[list[str], str | None]:
    """Problems with one pin from PyPI's project JSON, and a note when the pin is older than
    the newest release (advisories in between are known only from advisories.toml)."""
    found: list[str] = []
    files = project["releases"].get(str(pin.version))
    if files is None:
        for version, release_files in project["releases"].items():
            if Version(version) == pin.version:
                files = release_files
    if not files:
        return [f"{pin.name} {pin.version}: no such release on PyPI"], None
    if all(f.get("yanked") for f in files):
        reason = files[0].get("yanked_reason") or "no reason given"
        found.append(f"{pin.name} {pin.version}: yanked on PyPI ({reason})")
    published = {f"sha256:{f['digests']['sha256']}" for f in files}
    for unknown in sorted(pin.hashes - published):
        found.append(f"{pin.name} {pin.version}: {unknown} is no file PyPI has for it")
    newest = Version(project["info"]["version"])
    for vuln in project.get("vulnerabilities") or []:
        if vuln.get("withdrawn"):
            continue
        fixes = [Version(v) for v in vuln.get("fixed_in") or []]
        if pin.version == newest or not fixes or pin.version < min(fixes):
            found.append(
                f"{pin.name} {pin.version}: {vuln['id']} ({', '.join(vuln.get('aliases') or [])})"
                f" fixed in {', '.join(map(str, fixes)) or 'no release yet'} [PyPI, newest]"
            )
    note = None
    if pin.version < newest:
        note = f"{pin.name} {pin.version} (newest {newest})"
    return found, note


def audit(path: Path) -> tuple[list[str], list[str]]:
    pins = read_pins(path)
    if not pins:
        raise ScanError(f"{path}: no pinned requirements")
    found = listed_findings(pins, load_advisories())
    audited, skipped = pip_audit(path, pins)
    found += audited
    with ThreadPoolExecutor(max_workers=8) as pool:
        projects = list(pool.map(project_json, [pin.name for pin in pins]))
    notes = []
    for pin, project in zip(pins, projects, strict=True):
        problems, note = project_findings(pin, project)
        found += problems
        if note and pin.name in skipped:
            notes.append(note)
    if skipped:
        print(
            f"{path}: PyPI served no per-release advisories for {len(skipped)} of {len(pins)} "
            "pins (pip-audit skipped them); PyPI's newest-release advisories and "
            "requirements/advisories.toml were checked instead."
        )
    if notes:
        print(
            "  Older than the newest release, so advisories fixed in between are known only "
            "from requirements/advisories.toml: " + ", ".join(notes)
        )
    return found, notes


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [LOCK]
    status = 0
    for path in paths:
        try:
            found, _ = audit(path)
        except ScanError as error:
            print(f"audit: {error}", file=sys.stderr)
            return 2
        if found:
            print(f"{path}: {len(found)} known vulnerabilities or problems:")
            for line in found:
                print(f"  {line}")
            status = 1
        else:
            print(f"{path}: {len(read_pins(path))} pins, no known vulnerabilities")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
