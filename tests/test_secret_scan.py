"""The secret scan that CI runs fails on a secret, even one deleted again from the tree, and
also when what it found there comes from its cache (scripts/scan_secrets.py)."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_a_leaked_key_in_history_fails_the_scan(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(REPO, "clone", "--quiet", "--no-local", str(REPO), str(clone))
    shutil.copy(REPO / ".secrets.baseline", clone / ".secrets.baseline")
    shutil.copy(REPO / "scripts" / "scan_secrets.py", clone / "scripts" / "scan_secrets.py")
    clean = subprocess.run(
        [sys.executable, "scripts/scan_secrets.py"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr

    leak = clone / "deploy.sh"
    # Made up at run time, so this file itself holds nothing that looks like a secret.
    fake = base64.b64encode(secrets.token_bytes(30)).decode()
    leak.write_text(f'export AWS_SECRET_ACCESS_KEY="{fake}"\n')
    git(clone, "add", "deploy.sh")
    git(clone, "commit", "-qm", "oops")
    git(clone, "rm", "-q", "deploy.sh")
    git(clone, "commit", "-qm", "remove it again")
    # The first scan reads the new file version; the second finds it again in the cache.
    for _ in range(2):
        found = subprocess.run(
            [sys.executable, "scripts/scan_secrets.py"],
            cwd=clone,
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode == 1
        assert "history deploy.sh" in found.stdout
