"""Secret scan of the working tree and of every file version in git history (detect-secrets).

A finding fails the scan unless its hash is in `.secrets.baseline`, where each allowed one is
marked as audited (`"is_secret": false`): test fixtures and documented dev-only values.
Run by `make secrets`, which `make test` (and so CI) runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".secrets.baseline"


def allowed_hashes() -> set[str]:
    baseline = json.loads(BASELINE.read_text())
    return {
        finding["hashed_secret"]
        for findings in baseline["results"].values()
        for finding in findings
        if finding.get("is_secret") is False
    }


def history_blobs(out: Path) -> int:
    """Write every blob ever committed (one file per path and version) below `out`."""
    listing = subprocess.run(
        ["git", "rev-list", "--objects", "--all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    count = 0
    for line in listing.splitlines():
        sha, _, path = line.partition(" ")
        if not path:
            continue
        kind = subprocess.run(
            ["git", "cat-file", "-t", sha], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        if kind != "blob":
            continue
        content = subprocess.run(
            ["git", "cat-file", "blob", sha], cwd=ROOT, capture_output=True, check=True
        ).stdout
        target = out / f"{path}@{sha[:12]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        count += 1
    return count


def scan(directory: Path, files: list[str] | None = None) -> dict[str, list[dict[str, object]]]:
    # The baseline is made of secret hashes: high-entropy by nature, and no secret itself.
    command = [
        sys.executable,
        "-m",
        "detect_secrets",
        "scan",
        "--all-files",
        "--exclude-files",
        r"(^|/)\.secrets\.baseline(@[0-9a-f]+)?$",
    ]
    if files is not None:
        command += files
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True)
    findings: dict[str, list[dict[str, object]]] = json.loads(result.stdout)["results"]
    return findings


def main() -> int:
    allowed = allowed_hashes()
    tracked = [
        path
        for path in subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        if path != ".secrets.baseline"
    ]
    problems = [
        f"{path}:{f['line_number']}: {f['type']}"
        for path, found in scan(ROOT, tracked).items()
        for f in found
        if f["hashed_secret"] not in allowed
    ]
    with tempfile.TemporaryDirectory() as tmp:
        blobs = history_blobs(Path(tmp))
        problems += [
            f"history {path}:{f['line_number']}: {f['type']}"
            for path, found in scan(Path(tmp)).items()
            for f in found
            if f["hashed_secret"] not in allowed
        ]
    if problems:
        print("possible secrets (audit them into .secrets.baseline if they are not):")
        print("\n".join(sorted(set(problems))))
        return 1
    print(f"secret scan clean: {len(tracked)} tracked files, {blobs} file versions in history")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
