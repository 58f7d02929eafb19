"""A real Docker engine for the tests that run the compose stacks (tests/containers/), and the
images those stacks name: the official ones when this machine has them or can pull them,
otherwise local stand-ins built from tests/containers/standins/ on a Debian bookworm root
file system made by mmdebstrap (see the README.md there).

Everything is cached: the root file system tarball in PAKU_CACHE_DIR (default
~/.cache/paku-iot), and each stand-in image under its official tag with the label
`paku.standin.hash`, the hash of what it was built from; a matching label means no rebuild."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tests.support.compose import REPO

ENGINE_SCRIPT = REPO / "scripts" / "docker-engine.sh"
STANDINS_DIR = REPO / "tests" / "containers" / "standins"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
CACHE_DIR = Path(os.environ.get("PAKU_CACHE_DIR", Path.home() / ".cache" / "paku-iot"))
HASH_LABEL = "paku.standin.hash"
SUITE = "bookworm"

# Official image -> the stand-in's directory under STANDINS_DIR.
STANDINS = {
    "python:3.11-slim-bookworm": "python",
    "eclipse-mosquitto:2": "eclipse-mosquitto",
    "postgres:15": "postgres",
    "caddy:2": "caddy",
}
BASE_TAG = "paku-standin/base:bookworm"
ROOTFS_REPOSITORY = "paku-standin/rootfs"

FALLBACK_MIRRORS = {
    "bookworm": "http://deb.debian.org/debian",
    "bookworm-updates": "http://deb.debian.org/debian",
    "bookworm-security": "http://deb.debian.org/debian-security",
}


class EngineError(Exception):
    pass


def run(
    args: list[str], *, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise EngineError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def start_engine() -> str | None:
    """scripts/docker-engine.sh: None when the engine answers, otherwise why not."""
    try:
        result = run(["sh", str(ENGINE_SCRIPT)], timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return f"{ENGINE_SCRIPT} did not finish within 300 s"
    if result.returncode != 0:
        return f"no Docker engine: {result.stderr.strip() or result.stdout.strip()}"
    return None


def image_labels(name: str) -> dict[str, str] | None:
    """The image's labels ({} when it has none), or None when there is no such image."""
    result = run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", name], check=False
    )
    if result.returncode != 0:
        return None
    labels = json.loads(result.stdout.strip() or "null")
    return dict(labels or {})


def debian_mirrors() -> dict[str, str]:
    """The Debian mirror of each bookworm suite in this machine's apt sources (the same
    mirror for mmdebstrap as for apt here), Debian's own where a suite is not listed."""
    found: dict[str, str] = {}
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        if source.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, flags=re.MULTILINE))
                if "deb" not in fields.get("Types", "").split():
                    continue
                uris = fields.get("URIs", "").split()
                for suite in fields.get("Suites", "").split():
                    if suite in FALLBACK_MIRRORS and uris:
                        found.setdefault(suite, uris[0].rstrip("/"))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] in FALLBACK_MIRRORS:
                    found.setdefault(words[2], words[1].rstrip("/"))
    return {suite: found.get(suite, mirror) for suite, mirror in FALLBACK_MIRRORS.items()}


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def _tree_bytes(directory: Path) -> Iterable[bytes]:
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        yield str(path.relative_to(directory)).encode()
        yield str(path.stat().st_mode & 0o777).encode()
        yield path.read_bytes()


def _extra_cas() -> list[Path]:
    if not EXTRA_CA_DIR.is_dir():
        return []
    return sorted(p for p in EXTRA_CA_DIR.rglob("*.crt") if p.is_file())


def mmdebstrap_command(tarball: Path) -> list[str]:
    mirrors = debian_mirrors()
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--include=ca-certificates",
        "--quiet",
        SUITE,
        str(tarball),
        *(f"deb {mirror} {suite} main" for suite, mirror in mirrors.items()),
    ]


def ensure_rootfs(log: list[str]) -> str:
    """The imported root file system's tag, made (mmdebstrap, docker import) when missing."""
    key = _digest([" ".join(mmdebstrap_command(Path("rootfs.tar"))).encode()])
    tag = f"{ROOTFS_REPOSITORY}:{SUITE}-{key}"
    if image_labels(tag) is not None:
        return tag
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"rootfs-{SUITE}-minbase-{key}.tar"
    if not tarball.exists():
        if shutil.which("mmdebstrap") is None:
            raise EngineError("mmdebstrap is not installed (make docker-engine installs it)")
        partial = tarball.with_name(f".partial-{tarball.name}")  # mmdebstrap: .tar, a tarball
        shutil.rmtree(partial, ignore_errors=True)
        partial.unlink(missing_ok=True)
        log.append(f"mmdebstrap: {tarball}")
        run(mmdebstrap_command(partial), timeout=1200)
        partial.rename(tarball)
    log.append(f"docker import {tarball} {tag}")
    run(["docker", "import", "--change", 'CMD ["bash"]', str(tarball), tag], timeout=600)
    return tag


def _build(directory: Path, tag: str, content_hash: str, build_args: dict[str, str]) -> None:
    """docker build of a stand-in directory (plus, in the context, this machine's extra CA
    certificates as extra-ca/), labelled with its hash."""
    with tempfile.TemporaryDirectory(prefix="paku-standin-") as context:
        shutil.copytree(directory, context, dirs_exist_ok=True)
        extra = Path(context) / "extra-ca"
        extra.mkdir(exist_ok=True)
        for ca in _extra_cas():
            shutil.copy(ca, extra / ca.name)
        args = ["docker", "build", "--tag", tag, "--label", f"{HASH_LABEL}={content_hash}"]
        for name, value in build_args.items():
            args += ["--build-arg", f"{name}={value}"]
        run([*args, context], timeout=1800)


def ensure_standin_base(log: list[str]) -> tuple[str, str]:
    """The stand-ins' common base (tag, hash): the root file system and the CA certificates."""
    rootfs = ensure_rootfs(log)
    content_hash = _digest(
        [
            rootfs.encode(),
            *_tree_bytes(STANDINS_DIR / "base"),
            *(ca.read_bytes() for ca in _extra_cas()),
        ]
    )
    labels = image_labels(BASE_TAG)
    if labels is None or labels.get(HASH_LABEL) != content_hash:
        log.append(f"docker build {BASE_TAG}")
        _build(STANDINS_DIR / "base", BASE_TAG, content_hash, {"ROOTFS_IMAGE": rootfs})
    return BASE_TAG, content_hash


def pull(name: str) -> bool:
    try:
        return run(["docker", "pull", name], timeout=120, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_images(names: Iterable[str]) -> list[str]:
    """Make each image available under its name: as it is when present and not a stand-in,
    pulled when it can be, otherwise the stand-in (built unless its label says it is up to
    date). Returns what was done, for the test's log."""
    log: list[str] = []
    base: tuple[str, str] | None = None
    for name in names:
        labels = image_labels(name)
        if labels is not None and HASH_LABEL not in labels:
            log.append(f"{name}: present (not a stand-in)")
            continue
        if labels is None and pull(name):
            log.append(f"{name}: pulled")
            continue
        if base is None:
            base = ensure_standin_base(log)
        directory = STANDINS_DIR / STANDINS[name]
        content_hash = _digest([base[1].encode(), *_tree_bytes(directory)])
        if labels is not None and labels.get(HASH_LABEL) == content_hash:
            log.append(f"{name}: stand-in up to date")
            continue
        log.append(f"{name}: building the stand-in from {directory.relative_to(REPO)}")
        _build(directory, name, content_hash, {"BASE_IMAGE": base[0]})
    return log
