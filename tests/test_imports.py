"""The direction of the house (docs/architecture.md): which room may import which, no import
cycle between rooms, and every module importable on its own."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import paku_iot

SRC = Path(paku_iot.__file__).parent

# The kernel: leaf modules at the package root that any room may use. Each may import only
# the kernel modules listed for it.
KERNEL: dict[str, set[str]] = {
    "exceptions": set(),
    "protocol": {"exceptions"},
    "settings": {"exceptions", "protocol"},
    "secretfiles": set(),
    "jsonlimits": set(),
    "netcheck": {"exceptions"},
    "logs": set(),
    "gmqtt_internals": {"exceptions"},
}
# Any room may read the package version (`paku_iot.__version__`).
ANY_KERNEL = set(KERNEL) | {"__init__"}

# The rooms, and the rooms each may import besides the kernel. Nothing under storage/, broker/
# or collector/ reaches up to web/, cli/ or server/; the domain never imports an entry point.
ROOMS: dict[str, set[str]] = {
    "storage": set(),
    "broker": set(),
    "ota": {"storage"},
    "downlink": {"storage", "broker"},
    "collector": {"storage", "broker"},
    "registry": {"storage", "broker", "downlink"},
    "security": {"storage", "broker", "registry"},
    "alerts": {"storage", "registry"},
    "device": set(),
    "server": {
        "storage",
        "broker",
        "ota",
        "downlink",
        "collector",
        "registry",
        "security",
        "alerts",
    },
    "web": {
        "storage",
        "broker",
        "ota",
        "downlink",
        "collector",
        "registry",
        "security",
        "alerts",
        "server",
    },
    "cli": {
        "alerts",
        "storage",
        "broker",
        "ota",
        "downlink",
        "collector",
        "registry",
        "security",
        "server",
        "web",
        "device",
    },
}
# The package itself (its version and public exceptions) and `python -m paku_iot`.
TOP: dict[str, set[str]] = {"__init__": {"exceptions"}, "__main__": {"cli"}}


def room_of(module: str) -> str:
    """`paku_iot.web.api.routes.devices` -> `web`; `paku_iot.settings` -> `settings`."""
    parts = module.split(".")
    if parts == ["paku_iot"]:
        return "__init__"
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every paku_iot module the file imports, at any depth (also inside functions and
    TYPE_CHECKING blocks: a lazy import still ties the rooms together)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from paku_iot import x` and `from paku_iot.cli import admin` name modules too.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if _is_module(candidate):
                    found.add(candidate)
    return {name for name in found if name == "paku_iot" or name.startswith("paku_iot.")}


def _is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def source_files() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if "migrations" not in p.parts or p.name == "env.py"]


def room_imports() -> dict[str, dict[str, set[str]]]:
    """room -> imported room -> the importing modules (for the failure message)."""
    edges: dict[str, dict[str, set[str]]] = {}
    for path in source_files():
        name = module_name(path)
        source = room_of(name)
        for imported in imported_modules(path):
            target = room_of(imported)
            if target != source:
                edges.setdefault(source, {}).setdefault(target, set()).add(name)
    return edges


def allowed(source: str) -> set[str]:
    if source in KERNEL:
        return KERNEL[source]
    if source in ROOMS:
        return ROOMS[source] | ANY_KERNEL
    if source in TOP:
        return TOP[source]
    raise AssertionError(
        f"paku_iot.{source} is in no room: put it in one, or add it to the house's map "
        "(tests/test_imports.py and docs/architecture.md)"
    )


def test_every_room_imports_only_what_it_may() -> None:
    wrong = [
        f"{source} -> {target} (in {', '.join(sorted(modules))})"
        for source, targets in sorted(room_imports().items())
        for target, modules in sorted(targets.items())
        if target not in allowed(source)
    ]
    assert not wrong, "imports against the direction of the house:\n" + "\n".join(wrong)


def test_no_import_cycle_between_rooms() -> None:
    graph = {source: set(targets) for source, targets in room_imports().items()}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles between rooms:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_map_knows_every_room() -> None:
    on_disk = {room_of(module_name(p)) for p in source_files()}
    assert on_disk <= set(KERNEL) | set(ROOMS) | set(TOP), on_disk - set(KERNEL) - set(ROOMS)


def test_the_wire_contract_imports_nothing_but_exceptions() -> None:
    path = SRC / "protocol.py"
    assert path.is_file(), "the device contract lives in paku_iot/protocol.py"
    assert imported_modules(path) <= {"paku_iot.exceptions"}


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
