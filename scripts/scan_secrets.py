"""Secret scan of the working tree and of every file version in git history (detect-secrets).

A finding fails the scan unless its hash is in `.secrets.baseline`, where each allowed one is
marked as audited (`"is_secret": false`): test fixtures and documented dev-only values.
Run by `make secrets`, which `make test` (and so CI) runs.

detect-secrets reads about 80 kB a second, and history only grows, so what it found in a file
is kept between runs (`$XDG_CACHE_HOME/paku-iot/secret-scan`, by default under ~/.cache): the
findings of detect-secrets for one file name and one exact content (its git blob id), for one
detect-secrets version and these scan options. A file version is scanned once; the allowed
hashes are applied afterwards, on every run. `--no-cache` scans everything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".secrets.baseline"
# The baseline is made of secret hashes: high-entropy by nature, and no secret itself.
SCAN_OPTIONS = ["--all-files", "--exclude-files", r"(^|/)\.secrets\.baseline(@[0-9a-f]+)?$"]

Findings = list[dict[str, object]]


def allowed_hashes() -> set[str]:
    baseline = json.loads(BASELINE.read_text())
    return {
        finding["hashed_secret"]
        for findings in baseline["results"].values()
        for finding in findings
        if finding.get("is_secret") is False
    }


def git(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=ROOT, input=stdin, capture_output=True, check=True
    ).stdout


def blob_id(content: bytes) -> str:
    """The id git gives this content (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


class Cache:
    """Findings per (name the scan saw, content): `{"<name>\\0<blob id>": findings}`."""

    def __init__(self, enabled: bool) -> None:
        key = json.dumps([version("detect-secrets"), SCAN_OPTIONS]).encode()
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        name = f"{hashlib.sha256(key).hexdigest()[:16]}.json"
        self.path = base / "paku-iot" / "secret-scan" / name if enabled else None
        self.entries: dict[str, Findings] = {}
        self.added = 0
        if self.path is not None:
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}

    def get(self, name: str, blob: str) -> Findings | None:
        return self.entries.get(f"{name}\0{blob}")

    def put(self, name: str, blob: str, findings: Findings) -> None:
        self.entries[f"{name}\0{blob}"] = findings
        self.added += 1

    def save(self) -> None:
        """Written whole and renamed into place: concurrent runs never see half a file."""
        if self.path is None or not self.added:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, prefix=".tmp-", delete=False
            ) as tmp:
                json.dump(self.entries, tmp)
            os.replace(tmp.name, self.path)
        except OSError as exc:  # a cache that cannot be written only costs time
            print(f"secret scan: cache not saved ({exc})", file=sys.stderr)


def history_blobs() -> list[tuple[str, str]]:
    """(blob id, path) of every blob ever committed, each once."""
    listing = git("rev-list", "--objects", "--all").decode()
    objects = [
        (sha, path)
        for sha, _, path in (line.partition(" ") for line in listing.splitlines())
        if path
    ]
    kinds = git(
        "cat-file",
        "--batch-check=%(objecttype)",
        stdin="".join(f"{s}\n" for s, _ in objects).encode(),
    ).decode()
    return [obj for obj, kind in zip(objects, kinds.split(), strict=True) if kind == "blob"]


def read_blobs(shas: list[str]) -> list[bytes]:
    """The contents of these blobs, in one `git cat-file --batch`."""
    out = git("cat-file", "--batch", stdin="".join(f"{s}\n" for s in shas).encode())
    contents = []
    at = 0
    for _ in shas:
        header_end = out.index(b"\n", at)
        size = int(out[at:header_end].split()[2])
        contents.append(out[header_end + 1 : header_end + 1 + size])
        at = header_end + 1 + size + 1  # the content, then a newline
    return contents


def scan(directory: Path, files: list[str] | None = None) -> dict[str, Findings]:
    """detect-secrets on `files` in `directory` (all of its files when None)."""
    command = [sys.executable, "-m", "detect_secrets", "scan", *SCAN_OPTIONS]
    if files is not None:
        command += files
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True)
    findings: dict[str, Findings] = json.loads(result.stdout)["results"]
    unasked = set(findings) - set(files or findings)
    assert not unasked, f"detect-secrets named files it was not given: {sorted(unasked)[:5]}"
    return findings


def scan_tree(cache: Cache, tracked: list[str]) -> dict[str, Findings]:
    results: dict[str, Findings] = {}
    todo: dict[str, str] = {}  # path -> blob id
    for path in tracked:
        try:
            blob = blob_id((ROOT / path).read_bytes())
        except OSError:  # deleted but not yet committed: nothing to scan
            continue
        cached = cache.get(path, blob)
        if cached is None:
            todo[path] = blob
        else:
            results[path] = cached
    if todo:
        found = scan(ROOT, list(todo))
        for path, blob in todo.items():
            results[path] = found.get(path, [])
            cache.put(path, blob, results[path])
    return results


def scan_history(cache: Cache, blobs: list[tuple[str, str]]) -> dict[str, Findings]:
    """Each blob is scanned as `<path>@<short id>`, in a directory of its own."""
    results: dict[str, Findings] = {}
    todo: dict[str, str] = {}  # name -> blob id
    for sha, path in blobs:
        name = f"{path}@{sha[:12]}"
        cached = cache.get(name, sha)
        if cached is None:
            todo[name] = sha
        else:
            results[name] = cached
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in zip(todo, read_blobs(list(todo.values())), strict=True):
                target = Path(tmp) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            found = scan(Path(tmp))
        unknown = set(found) - set(todo)
        assert not unknown, f"detect-secrets named files not written: {sorted(unknown)[:5]}"
        for name, sha in todo.items():
            results[name] = found.get(name, [])
            cache.put(name, sha, results[name])
    return results


def main() -> int:
    cache = Cache(enabled="--no-cache" not in sys.argv[1:])
    allowed = allowed_hashes()
    tracked = [p for p in git("ls-files").decode().split() if p != ".secrets.baseline"]
    problems = [
        f"{path}:{f['line_number']}: {f['type']}"
        for path, found in scan_tree(cache, tracked).items()
        for f in found
        if f["hashed_secret"] not in allowed
    ]
    blobs = history_blobs()
    problems += [
        f"history {path}:{f['line_number']}: {f['type']}"
        for path, found in scan_history(cache, blobs).items()
        for f in found
        if f["hashed_secret"] not in allowed
    ]
    cache.save()
    if problems:
        print("possible secrets (audit them into .secrets.baseline if they are not):")
        print("\n".join(sorted(set(problems))))
        return 1
    print(
        f"secret scan clean: {len(tracked)} tracked files, {len(blobs)} file versions in "
        f"history ({cache.added} scanned now, the others known from the cache)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
