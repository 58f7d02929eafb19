# shellcheck shell=bash
# shellcheck disable=SC2034  # sets script_dir and python for its caller
# Shared by backup.sh and restore.sh: the tools they need. Expects the function die.
# python3 serves the SQLite backup API, URL parsing and the manifest; paku-iot's own
# interpreter stands in when there is no python3 on PATH.

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH: $2"
}
need tar "install tar"
need gzip "install gzip"

find_python() {
  if [ -n "${PAKU_PYTHON:-}" ]; then printf '%s\n' "$PAKU_PYTHON"; return; fi
  if command -v python3 >/dev/null 2>&1; then command -v python3; return; fi
  local bin
  bin=$(command -v paku-iot 2>/dev/null || true)
  if [ -n "$bin" ] && [ -x "$(dirname "$bin")/python" ]; then printf '%s\n' "$(dirname "$bin")/python"; return; fi
  if [ -x "$script_dir/../.venv/bin/python" ]; then printf '%s\n' "$script_dir/../.venv/bin/python"; return; fi
  return 1
}
python=$(find_python) || die "python3 not found on PATH (set PAKU_PYTHON to a Python 3 interpreter)"
