"""Every module imports on its own: no import cycle hides behind a lucky import order."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import paku_iot

SCRIPT = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "paku_iot" or m.startswith("paku_iot.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone() -> None:
    names = [
        info.name
        for info in pkgutil.walk_packages(paku_iot.__path__, "paku_iot.")
        if ".migrations" not in info.name and info.name != "paku_iot.__main__"
    ]
    assert len(names) > 30
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
