#!/usr/bin/env bash
# Back up everything paku-iot keeps: the database, the firmware store, the secrets (admin token,
# OTA signing key) and the broker directory, into one dated archive. Safe to run from cron while
# paku-iot runs; never prompts.
#
#   scripts/backup.sh [--out DIR] [--keep N] [--recipients-file FILE]
#
#   --out DIR   where archives go (default: ./backups, created mode 0700)
#   --keep N    keep the newest N archives in DIR, delete older ones (default: 14)
#   --recipients-file FILE
#               encrypt the archive with age to the public keys in FILE (one `age1...` or
#               `ssh-ed25519 ...` a line; default: $PAKU_BACKUP_RECIPIENTS_FILE, else
#               DIR/recipients.txt when it exists): it is then .tar.gz.age, and only the
#               matching private key can restore it
#
# Settings come from the environment only, with paku-iot's defaults (relative paths are taken
# from the current directory, as paku-iot does): PAKU_DATA_DIR (./var), PAKU_DATABASE_URL
# (sqlite:///<data dir>/paku.db), PAKU_OTA_DIR (<data dir>/firmware), PAKU_BROKER_DIR
# (<data dir>/broker), PAKU_OTA_SIGNING_KEY_FILE (<data dir>/secrets/ota-signing-key.pem).
# .env and config/config.yml are NOT read: export the same values when you use those files.
#
# The archive, paku-backup-YYYYmmddTHHMMSSZ.tar.gz (mode 0600), holds one directory of the
# same name with:
#   manifest.json            what is inside, where it came from, paku-iot version, and the
#                            size and SHA-256 of every file (restore.sh checks them)
#   database/paku.pgdump     PostgreSQL: pg_dump --format=custom (one consistent snapshot)
#   database/paku.db         SQLite: a copy made with SQLite's online backup API
#   firmware/<sha256>.bin    the firmware store (unfinished uploads left out)
#   secrets/                 admin-token, ota-signing-key.pem (devices pin its public key);
#                            never ui-session-key (it signs dashboard sessions, and restore.sh
#                            makes a new one)
#   signing-key/<file>       only when PAKU_OTA_SIGNING_KEY_FILE points outside secrets/
#   broker/                  mosquitto.conf, acl and data/ (the broker's persistence:
#                            retained messages such as each device's desired config, and
#                            queued messages for offline sessions). Left out: the pid file, the
#                            log, half-written files, and what paku-iot makes again on its next
#                            start: backend-password (the backend's own broker password: a new
#                            one is made when there is none), backend-passwd (its hash, made
#                            with it) and passwd (rewritten from the devices in the database).
# Whatever can be regenerated stays out, so that an archive hands out as little as it can; it
# still holds the admin token (when generated), the OTA signing key and every device's password
# hash: keep it 0600, or encrypt it (--recipients-file, docs/operations.md "Backups").
# The database is dumped first and the files copied after it: firmware images are named by
# their content and only ever added, so every release in the dump has its image in the archive.
# The broker's persistence is as of its last autosave (30 s) unless the broker is stopped.
#
# Needs bash, tar, gzip, python3 (or the python next to paku-iot) and, for PostgreSQL, pg_dump
# (postgresql-client) no older than the server; with --recipients-file, age (Debian: apt-get
# install age). Exit status: 0 done, 1 failed, 2 bad usage.
set -euo pipefail
umask 077
export LC_ALL=C

prog=backup.sh
die() {
  printf '%s: error: %s\n' "$prog" "$*" >&2
  exit 1
}
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
usage() {
  sed -n '/^#   scripts/,/matching private key can restore it/p' "$0" | sed 's/^# \{0,1\}//'
}

out_dir=./backups
keep=14
recipients_file=${PAKU_BACKUP_RECIPIENTS_FILE:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out_dir=$2; shift 2 ;;
    --out=*) out_dir=${1#--out=}; shift ;;
    --keep) [ $# -ge 2 ] || { usage >&2; exit 2; }; keep=$2; shift 2 ;;
    --keep=*) keep=${1#--keep=}; shift ;;
    --recipients-file) [ $# -ge 2 ] || { usage >&2; exit 2; }; recipients_file=$2; shift 2 ;;
    --recipients-file=*) recipients_file=${1#--recipients-file=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) printf '%s: unknown argument: %s\n' "$prog" "$1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$keep" in
  '' | *[!0-9]*) printf '%s: --keep needs a whole number of archives (1 or more)\n' "$prog" >&2; exit 2 ;;
esac
if [ "$keep" -lt 1 ]; then
  printf '%s: --keep must be at least 1 (the archive just made is always kept)\n' "$prog" >&2
  exit 2
fi
[ -n "$out_dir" ] || { printf '%s: --out needs a directory\n' "$prog" >&2; exit 2; }
if [ -z "$recipients_file" ] && [ -e "$out_dir/recipients.txt" ]; then
  recipients_file=$out_dir/recipients.txt
fi
suffix=.tar.gz
if [ -n "$recipients_file" ]; then
  suffix=.tar.gz.age
fi

# shellcheck source=scripts/paku-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/paku-tools.sh"

find_paku() {
  if command -v paku-iot >/dev/null 2>&1; then command -v paku-iot; return; fi
  if [ -x "$script_dir/../.venv/bin/paku-iot" ]; then printf '%s\n' "$script_dir/../.venv/bin/paku-iot"; return; fi
  return 1
}
paku_version=unknown
if paku_bin=$(find_paku); then
  paku_version=$("$paku_bin" --version 2>/dev/null | awk '{print $NF}') || paku_version=unknown
  [ -n "$paku_version" ] || paku_version=unknown
fi

# --- where paku-iot keeps its state (the same defaults as paku_iot.settings) ---------------
# shellcheck source=scripts/paku-state.sh
source "$(dirname "${BASH_SOURCE[0]}")/paku-state.sh"

if [ "$db_kind" = sqlite ] && [ ! -f "$db_target" ]; then
  die "no SQLite database at $db_target (PAKU_DATABASE_URL / PAKU_DATA_DIR); nothing to back up"
fi
if [ "$db_kind" = postgresql ]; then
  need pg_dump "install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client)"
fi
if [ -n "$recipients_file" ]; then
  need age "install age to encrypt backups (Debian/Ubuntu: apt-get install age)"
  [ -r "$recipients_file" ] || die "cannot read the recipients file $recipients_file"
  grep -qE '^(age1|ssh-)' "$recipients_file" ||
    die "$recipients_file holds no age recipient (a line starting age1... or ssh-...): give the PUBLIC key"
fi

# --- output directory, lock, staging -------------------------------------------------------
mkdir -p "$out_dir" || die "cannot create the output directory $out_dir"
[ -w "$out_dir" ] || die "cannot write to the output directory $out_dir"
out_dir=$(cd "$out_dir" && pwd)

if command -v flock >/dev/null 2>&1; then
  exec 9>"$out_dir/.paku-backup.lock"
  flock -n 9 || die "another backup into $out_dir is still running"
fi

stage=$(mktemp -d "$out_dir/.paku-backup-stage.XXXXXX")
partial=""
cleanup() {
  rm -rf "$stage"
  if [ -n "$partial" ]; then rm -f "$partial"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One archive per second at most: wait for the next second rather than overwrite.
while :; do
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  name=paku-backup-$stamp
  [ -e "$out_dir/$name.tar.gz" ] || [ -e "$out_dir/$name.tar.gz.age" ] || break
  sleep 1
done
root=$stage/$name
mkdir -p "$root/database"

# --- the database, first --------------------------------------------------------------------
if [ "$db_kind" = sqlite ]; then
  db_file=database/paku.db
  echo "backing up SQLite $db_target"
  "$python" - "$db_target" "$root/$db_file" <<'PY' || die "the SQLite backup of $db_target failed"
import sqlite3
import sys
import urllib.parse as up

source, target = sys.argv[1], sys.argv[2]
# mode=rw: never create an empty database where the real one was expected
src = sqlite3.connect(f"file:{up.quote(source)}?mode=rw", uri=True, timeout=60)
dst = sqlite3.connect(target)
try:
    with dst:
        src.backup(dst)  # the online backup API: a consistent copy, WAL contents included
    check = dst.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        sys.exit(f"the copy fails SQLite's quick_check: {check}")
finally:
    dst.close()
    src.close()
PY
else
  db_file=database/paku.pgdump
  echo "backing up PostgreSQL $db_target"
  pg_env=(PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}")
  if [ -n "$db_password" ]; then pg_env+=(PGPASSWORD="$db_password"); fi
  if ! env "${pg_env[@]}" pg_dump --format=custom --no-password \
    --file="$root/$db_file" --dbname="$db_target"; then
    die "pg_dump of $db_target failed (see above): is PostgreSQL reachable and the URL right?"
  fi
fi

# --- then the files ------------------------------------------------------------------------
# copy_dir SRC DEST [tar --exclude patterns...]: the regular files and directories of SRC.
copy_dir() {
  local src=$1 dest=$2
  shift 2
  local excludes=() pattern
  for pattern in "$@"; do excludes+=("--exclude=$pattern"); done
  mkdir -p "$dest"
  (cd "$src" && tar -cf - "${excludes[@]}" .) | (cd "$dest" && tar -xpf -)
}

firmware_included=false
if [ -d "$firmware_dir" ]; then
  copy_dir "$firmware_dir" "$root/firmware" '.upload-*'
  firmware_included=true
else
  warn "no firmware directory at $firmware_dir (no release published yet?)"
fi

secrets_included=false
if [ -d "$secrets_dir" ]; then
  copy_dir "$secrets_dir" "$root/secrets" '.*.tmp' ui-session-key 'ui-session-key.*'
  secrets_included=true
else
  warn "no secrets directory at $secrets_dir: the admin token and signing key are not in this backup"
fi

signing_key_member=""
if [ -n "$signing_key_file" ]; then
  [ -f "$signing_key_file" ] || die "PAKU_OTA_SIGNING_KEY_FILE=$signing_key_file: no such file"
  signing_key_member=signing-key/$(basename "$signing_key_file")
  mkdir -p "$root/signing-key"
  cp -p "$signing_key_file" "$root/$signing_key_member"
fi

broker_included=false
if [ -d "$broker_dir" ]; then
  copy_dir "$broker_dir" "$root/broker" mosquitto.pid mosquitto.log mosquitto.stderr '.*.tmp' '*.new' \
    ./backend-password './backend-password.*' ./passwd './passwd.*' ./backend-passwd \
    './backend-passwd.*'
  broker_included=true
elif [ -n "${PAKU_BROKER_DIR:-}" ]; then
  die "PAKU_BROKER_DIR=$broker_dir: no such directory"
fi

# --- manifest ------------------------------------------------------------------------------
export BK_ROOT=$root BK_CREATED=$stamp BK_VERSION=$paku_version BK_DB_KIND=$db_kind \
  BK_DB_FILE=$db_file BK_DB_SOURCE=$db_target BK_DATA_DIR=$data_dir \
  BK_FIRMWARE_DIR=$firmware_dir BK_FIRMWARE=$firmware_included \
  BK_SECRETS_DIR=$secrets_dir BK_SECRETS=$secrets_included \
  BK_BROKER_DIR=$broker_dir BK_BROKER=$broker_included \
  BK_KEY_FILE=$signing_key_file BK_KEY_MEMBER=$signing_key_member
"$python" - <<'PY' || die "could not write the manifest"
import hashlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

e = os.environ
root = Path(e["BK_ROOT"])


def absolute(path: str) -> str:
    return str(Path(path).absolute())


files = {}
for path in sorted(p for p in root.rglob("*") if p.is_file()):
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    files[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def count(prefix: str) -> int:
    return sum(1 for name in files if name.startswith(prefix + "/"))


created = datetime.strptime(e["BK_CREATED"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
manifest = {
    "format": "paku-backup/1",
    "created": created.isoformat().replace("+00:00", "Z"),
    "host": socket.gethostname(),
    "paku_iot_version": e["BK_VERSION"],
    "database": {
        "kind": e["BK_DB_KIND"],
        "file": e["BK_DB_FILE"],
        "source": absolute(e["BK_DB_SOURCE"]) if e["BK_DB_KIND"] == "sqlite" else e["BK_DB_SOURCE"],
    },
    "firmware": {"included": e["BK_FIRMWARE"] == "true", "source": absolute(e["BK_FIRMWARE_DIR"]),
                 "files": count("firmware")},
    "secrets": {"included": e["BK_SECRETS"] == "true", "source": absolute(e["BK_SECRETS_DIR"]),
                "files": sorted(n.split("/", 1)[1] for n in files if n.startswith("secrets/"))},
    "signing_key_file": {"source": absolute(e["BK_KEY_FILE"]), "file": e["BK_KEY_MEMBER"]}
    if e["BK_KEY_MEMBER"] else None,
    "broker": {"included": e["BK_BROKER"] == "true", "source": absolute(e["BK_BROKER_DIR"]),
               "persistence": any(n.startswith("broker/data/") for n in files),
               "excluded": ["mosquitto.pid", "mosquitto.log", "mosquitto.stderr",
                            "backend-password", "passwd", "backend-passwd"]},
    "regenerated": ["secrets/ui-session-key", "broker/backend-password", "broker/passwd",
                    "broker/backend-passwd"],
    "data_dir": absolute(e["BK_DATA_DIR"]),
    "files": files,
}
(root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
PY

# --- archive: a temporary name, checked, then renamed --------------------------------------
partial=$out_dir/.$name$suffix.partial
if [ -n "$recipients_file" ]; then
  # Only the encrypted bytes ever reach the output directory.
  echo "encrypting to the recipients in $recipients_file"
  tar -C "$stage" -czf - "$name" | age --encrypt --recipients-file "$recipients_file" --output "$partial" ||
    die "could not write the encrypted archive in $out_dir (see above)"
  head -c 21 "$partial" | grep -q '^age-encryption.org/v1' || die "the archive just written is not age-encrypted: $partial"
else
  tar -C "$stage" -czf "$partial" "$name" || die "could not write the archive in $out_dir"
  gzip -t "$partial" || die "the archive just written does not read back: $partial"
fi
chmod 600 "$partial"
sync "$partial" 2>/dev/null || true
mv -f "$partial" "$out_dir/$name$suffix"
partial=""
size=$(wc -c <"$out_dir/$name$suffix" | tr -d ' ')
echo "wrote $out_dir/$name$suffix ($size bytes)"

# --- keep the newest N ---------------------------------------------------------------------
shopt -s nullglob
archives=("$out_dir"/paku-backup-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.tar.gz
  "$out_dir"/paku-backup-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.tar.gz.age)
# Oldest first, encrypted or not: the names sort by their time stamp.
mapfile -t archives < <(printf '%s\n' "${archives[@]}" | sort)
excess=$((${#archives[@]} - keep))
if [ "$excess" -gt 0 ]; then
  for old in "${archives[@]:0:excess}"; do
    rm -f -- "$old"
    echo "deleted $old (keeping the newest $keep)"
  done
fi
