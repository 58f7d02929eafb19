"""The `paku-iot` command line as an admin runs it against a running `paku-iot dev` (the
`dev_api` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path


async def cli(
    env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "paku_iot", *args],
        env={**os.environ, **env},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
