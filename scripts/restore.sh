#!/usr/bin/env bash
# Put a backup made by scripts/backup.sh back in place: the database, the firmware store, the
# secrets (admin token, OTA signing key) and the broker directory.
#
#   scripts/restore.sh [--yes] [--identity FILE] ARCHIVE
#
#   --yes   replace what is there: without it, restore.sh refuses when any target (database,
#           firmware, secrets, broker directory) already holds data
#   --identity FILE
#           the age private key an encrypted archive (.tar.gz.age) was made for (default:
#           $PAKU_BACKUP_IDENTITY_FILE, if set)
#
# (A PostgreSQL database with any table in it counts as holding data; so does a migrated but
# empty one.) The archive is unpacked into $TMPDIR (/tmp), which needs room for its contents
# and, for PostgreSQL, the SQL script pg_restore makes from the dump.
#
# Stop paku-iot first (serve or dev, and a broker it configured): restore.sh refuses to run
# while the broker's pid file names a live process or the SQLite file is open.
#
# Targets come from the environment only, exactly as for backup.sh and paku-iot itself:
# PAKU_DATA_DIR (./var), PAKU_DATABASE_URL (sqlite:///<data dir>/paku.db), PAKU_OTA_DIR
# (<data dir>/firmware), PAKU_BROKER_DIR (<data dir>/broker), PAKU_OTA_SIGNING_KEY_FILE.
# They need not be where the backup was made.
#
# - Every file is checked against the SHA-256 in the archive's manifest before anything is
#   touched, and an archive holding anything its manifest does not list (a file, a link, a
#   device) is refused whole: nothing is restored from it.
# - An encrypted archive is decrypted with age into $TMPDIR first; a wrong key is refused
#   before anything is touched.
# - The dashboard's session key (secrets/ui-session-key) is never taken from an archive: a new
#   one is made, so no session signed before the restore is accepted after it.
# - PostgreSQL: the database in PAKU_DATABASE_URL must exist (it may be empty: createdb it);
#   the tables in the dump are dropped and pg_restore --clean --if-exists's script recreates
#   them, all in one transaction (psql --single-transaction), so a failure leaves the database
#   as it was. The dump's SQL runs as the user in the URL, who then owns what it creates
#   (--no-owner); grants are not restored (--no-privileges). Tables the dump does not have are
#   left alone. The compose files' URL names paku_app, a role that owns paku-iot's tables and
#   nothing more (not a superuser): a dump's SQL can do nothing that role cannot.
# - SQLite: the file is replaced atomically (rename), its old -wal/-shm removed.
# - Files are copied over what is there, each one atomically; files the archive does not have
#   are left alone. A secret that differs from the archive's is kept next to it as
#   <name>.replaced-<time> (a signing key that devices may pin is never silently lost).
#
# Needs bash, tar, gzip, python3 (or the python next to paku-iot), for PostgreSQL pg_restore
# and psql, and for an encrypted archive age. Exit status: 0 restored, 1 failed or refused,
# 2 bad usage.
set -euo pipefail
umask 077
export LC_ALL=C

prog=restore.sh
die() {
  printf '%s: error: %s\n' "$prog" "$*" >&2
  exit 1
}
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
usage() {
  # shellcheck disable=SC2016 # a literal $ in the pattern
  sed -n '/^#   scripts/,/^#           \$PAKU_BACKUP_IDENTITY_FILE/p' "$0" | sed 's/^# \{0,1\}//'
}

yes=false
archive=""
identity=${PAKU_BACKUP_IDENTITY_FILE:-}
while [ $# -gt 0 ]; do
  case "$1" in
    -y | --yes) yes=true; shift ;;
    --identity) [ $# -ge 2 ] || { usage >&2; exit 2; }; identity=$2; shift 2 ;;
    --identity=*) identity=${1#--identity=}; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; [ $# -eq 1 ] || { usage >&2; exit 2; }; archive=$1; shift ;;
    -*) printf '%s: unknown option: %s\n' "$prog" "$1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$archive" ] || { usage >&2; exit 2; }; archive=$1; shift ;;
  esac
done
[ -n "$archive" ] || { printf '%s: which archive?\n' "$prog" >&2; usage >&2; exit 2; }
[ -f "$archive" ] || die "no such archive: $archive"

# shellcheck source=scripts/paku-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/paku-tools.sh"

echo "paku-iot must be stopped while restoring (paku-iot serve/dev and its broker); start it again afterwards."

# --- the targets (the same defaults as paku_iot.settings) ----------------------------------
# shellcheck source=scripts/paku-state.sh
source "$(dirname "${BASH_SOURCE[0]}")/paku-state.sh"

pg_env=(PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}")
if [ -n "$db_password" ]; then pg_env+=(PGPASSWORD="$db_password"); fi
pg_sql() {
  env "${pg_env[@]}" psql --no-password --no-psqlrc --quiet --tuples-only --no-align \
    --set=ON_ERROR_STOP=1 --dbname="$db_target" --command="$1"
}
if [ "$db_kind" = postgresql ]; then
  need pg_restore "install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client)"
  need psql "install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client)"
fi

# --- unpack and check the archive ------------------------------------------------------------
stage=$(mktemp -d "${TMPDIR:-/tmp}/paku-restore.XXXXXX")
trap 'rm -rf "$stage"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
plain=$archive
if head -c 64 "$archive" | grep -aqE '^(age-encryption\.org/v1|-----BEGIN AGE ENCRYPTED FILE-----)'; then
  [ -n "$identity" ] ||
    die "$archive is encrypted (age): give the private key it was made for with --identity FILE"
  [ -r "$identity" ] || die "cannot read the identity file $identity"
  need age "install age to decrypt this archive (Debian/Ubuntu: apt-get install age)"
  plain=$stage/archive.tar.gz
  if ! age_error=$(age --decrypt --identity "$identity" --output "$plain" "$archive" 2>&1); then
    case "$age_error" in
      *"no identity matched"*)
        die "cannot decrypt $archive: $identity is not the key it was encrypted to (age: no identity matched any of the recipients); nothing was restored" ;;
      *) die "cannot decrypt $archive with $identity: ${age_error:-age failed}; nothing was restored" ;;
    esac
  fi
  echo "decrypted $archive with $identity"
fi
mkdir "$stage/unpacked"
tar -xzf "$plain" -C "$stage/unpacked" || die "cannot read $archive (not a complete paku-backup archive?)"
[ "$plain" = "$archive" ] || rm -f "$plain"
shopt -s nullglob dotglob
roots=("$stage"/unpacked/*)
shopt -u nullglob dotglob
if [ ${#roots[@]} -ne 1 ] || [ ! -f "${roots[0]}/manifest.json" ] || [ -L "${roots[0]}" ] ||
  [[ "${roots[0]##*/}" != paku-backup-* ]]; then
  die "$archive is not a paku-iot backup (not one paku-backup-*/ directory with a manifest.json inside)"
fi
root=${roots[0]}

manifest=$("$python" - "$root" <<'PY'
import hashlib
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
m = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
if m.get("format") != "paku-backup/1":
    sys.exit(f"unknown archive format {m.get('format')!r}")
listed = set(m["files"])
unlisted = []
for path in sorted(root.rglob("*")):
    name = path.relative_to(root).as_posix()
    if path.is_symlink() or not (path.is_dir() or path.is_file()):
        unlisted.append(f"{name} (not a regular file)")
    elif path.is_file() and name != "manifest.json" and name not in listed:
        unlisted.append(name)
if unlisted:
    sys.exit(
        "the archive holds what its manifest does not list, so none of it is restored: "
        + ", ".join(unlisted[:10]) + (f" and {len(unlisted) - 10} more" if len(unlisted) > 10 else "")
    )
bad = []
for name, meta in m["files"].items():
    if name.startswith("/") or ".." in name.split("/"):
        bad.append(f"{name}: not a path inside the archive")
        continue
    path = root / name
    if not path.is_file():
        bad.append(f"{name}: missing")
        continue
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != meta["sha256"] or path.stat().st_size != meta["size"]:
        bad.append(f"{name}: checksum mismatch")
if bad:
    sys.exit("the archive is damaged: " + "; ".join(bad[:10]))
key = m.get("signing_key_file") or {}
print(m["database"]["kind"], m["database"]["file"], m["created"], m["paku_iot_version"],
      m["broker"]["source"], key.get("file", ""), sep="\n")
PY
) || die "$archive failed its checks"
{
  IFS= read -r archive_kind
  IFS= read -r archive_db_file
  IFS= read -r archive_created
  IFS= read -r archive_version
  IFS= read -r archive_broker_source
  IFS= read -r archive_key_member || true
} <<<"$manifest"
echo "archive: backup of $archive_created, paku-iot $archive_version, $archive_kind database; checksums ok"

[ "$archive_kind" = "$db_kind" ] ||
  die "the archive holds a $archive_kind database but PAKU_DATABASE_URL is $db_kind; set PAKU_DATABASE_URL to a $archive_kind database"

# --- is paku-iot stopped? ----------------------------------------------------------------------
pid_file=$broker_dir/mosquitto.pid
if [ -f "$pid_file" ]; then
  pid=$(tr -dc '0-9' <"$pid_file" || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    if [ ! -r "/proc/$pid/comm" ] || grep -q mosquitto "/proc/$pid/comm"; then
      die "the broker is running (pid $pid, from $pid_file): stop paku-iot and its broker first"
    fi
  fi
fi
open_by() { # pids with FILE open (Linux, processes we may inspect)
  [ -d /proc/self/fd ] || return 0
  local abs
  abs=$(cd "$(dirname "$1")" 2>/dev/null && pwd)/$(basename "$1") || return 0
  # processes come and go while find looks, so it may well complain: only its output counts
  { find /proc/[0-9]*/fd -maxdepth 1 -lname "$abs" 2>/dev/null || true; } | cut -d/ -f3 | sort -u | paste -sd ' ' -
}
if [ "$db_kind" = sqlite ] && [ -e "$db_target" ]; then
  pids=$(open_by "$db_target")
  [ -z "$pids" ] || die "$db_target is open (pids $pids): stop paku-iot first"
fi

# --- do the targets hold data? -----------------------------------------------------------------
found=()
if [ "$db_kind" = sqlite ]; then
  if [ -s "$db_target" ]; then found+=("SQLite database $db_target"); fi
else
  if ! tables=$(pg_sql "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%'"); then
    die "cannot connect to $db_target (see above): the database must exist and be reachable (createdb it if it is new)"
  fi
  if [ "${tables:-0}" -gt 0 ]; then found+=("PostgreSQL database $db_target ($tables tables)"); fi
  others=$(pg_sql "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" || echo 0)
  if [ "${others:-0}" -gt 0 ]; then
    warn "$others other session(s) are connected to the database: is paku-iot still running?"
  fi
fi
has_files() { [ -d "$1" ] && [ -n "$(find "$1" -type f -print -quit)" ]; }
if has_files "$firmware_dir"; then found+=("firmware store $firmware_dir"); fi
if has_files "$secrets_dir"; then found+=("secrets $secrets_dir"); fi
if [ -n "$archive_key_member" ] && [ -n "$signing_key_file" ] && [ -e "$signing_key_file" ]; then
  found+=("signing key $signing_key_file")
fi
if has_files "$broker_dir"; then found+=("broker directory $broker_dir"); fi

if [ ${#found[@]} -gt 0 ]; then
  if [ "$yes" != true ]; then
    {
      printf '%s: these targets already hold data:\n' "$prog"
      printf '  %s\n' "${found[@]}"
      printf 'Stop paku-iot, then run again with --yes to replace them with the backup.\n'
    } >&2
    exit 1
  fi
  echo "replacing what is in: ${found[*]}"
fi

# --- database -----------------------------------------------------------------------------------
if [ "$db_kind" = sqlite ]; then
  db_parent=$(dirname "$db_target")
  mkdir -p "$db_parent"
  tmp_db=$db_parent/.$(basename "$db_target").restore.$$
  cp "$root/$archive_db_file" "$tmp_db"
  if [ "$(id -u)" -eq 0 ]; then # the file belongs to whoever runs paku-iot, not to root
    if [ -e "$db_target" ]; then chown --reference="$db_target" "$tmp_db"; else chown --reference="$db_parent" "$tmp_db"; fi
  fi
  rm -f "$db_target-wal" "$db_target-shm" "$db_target-journal"
  mv -f "$tmp_db" "$db_target"
  echo "restored SQLite database $db_target"
else
  echo "restoring PostgreSQL database $db_target"
  dump=$root/$archive_db_file
  # pg_restore --clean alone cannot replace partitioned tables (telemetry): it drops each
  # partition's inherited constraints first, which PostgreSQL refuses. So the tables the dump
  # holds are dropped first, then pg_restore --clean --if-exists's script runs, all of it in
  # one transaction: a failure leaves the database as it was.
  {
    printf 'SET client_min_messages = warning;\n'
    pg_restore --list "$dump" | awk '$4 == "TABLE" && $5 != "DATA" && $5 != "ATTACH" {
      gsub(/"/, "\"\"", $5); gsub(/"/, "\"\"", $6); printf "DROP TABLE IF EXISTS \"%s\".\"%s\" CASCADE;\n", $5, $6 }'
  } >"$stage/drop.sql" || die "cannot read the database dump in $archive"
  pg_restore --clean --if-exists --no-owner --no-privileges --file="$stage/restore.sql" "$dump" ||
    die "cannot read the database dump in $archive"
  if ! env "${pg_env[@]}" psql --no-password --no-psqlrc --quiet --single-transaction \
    --set=ON_ERROR_STOP=1 --output=/dev/null --dbname="$db_target" \
    --file="$stage/drop.sql" --file="$stage/restore.sql"; then
    die "restoring into $db_target failed (see above); the database was left as it was"
  fi
  echo "restored PostgreSQL database $db_target"
fi

# --- files ------------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# put_file SRC DEST KEEP_OLD: copy atomically; with KEEP_OLD=true a different DEST is kept.
put_file() {
  local src=$1 dest=$2 keep_old=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then return 0; fi
  mkdir -p "$(dirname "$dest")"
  if [ "$keep_old" = true ] && [ -f "$dest" ]; then
    cp -p "$dest" "$dest.replaced-$stamp"
    warn "$dest differed from the backup; the old one is kept as $dest.replaced-$stamp"
  fi
  local tmp
  tmp=$(dirname "$dest")/.$(basename "$dest").restore.$$
  cp -p "$src" "$tmp"
  mv -f "$tmp" "$dest"
}
# put_dir SRC DEST KEEP_OLD: every file under SRC to the same place under DEST.
put_dir() {
  local src=$1 dest=$2 keep_old=$3 file count=0
  [ -d "$src" ] || return 0
  mkdir -p "$dest"
  while IFS= read -r -d '' file; do
    put_file "$src/$file" "$dest/$file" "$keep_old"
    count=$((count + 1))
  done < <(cd "$src" && find . -type f -print0)
  echo "restored $count file(s) into $dest"
}

put_dir "$root/firmware" "$firmware_dir" false
# The session key is made anew (an old archive may still hold one: it is not used).
rm -f "$root/secrets/ui-session-key"
put_dir "$root/secrets" "$secrets_dir" true
mkdir -p "$secrets_dir"
chmod 700 "$secrets_dir"
"$python" - "$secrets_dir/ui-session-key" <<'PY' || die "could not make a new dashboard session key in $secrets_dir"
import os
import secrets
import sys

path = sys.argv[1]
tmp = f"{path}.restore.{os.getpid()}"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as fh:
    fh.write(secrets.token_urlsafe(32) + "\n")
os.replace(tmp, path)
PY
if [ "$(id -u)" -eq 0 ]; then # the key belongs to whoever runs paku-iot, not to root
  chown --reference="$secrets_dir" "$secrets_dir/ui-session-key"
fi
echo "made a new dashboard session key: sessions signed before the restore are refused"
if [ -n "$archive_key_member" ]; then
  if [ -n "$signing_key_file" ]; then
    put_file "$root/$archive_key_member" "$signing_key_file" true
    echo "restored the OTA signing key to $signing_key_file"
  else
    put_file "$root/$archive_key_member" "$secrets_dir/ota-signing-key.pem" true
    warn "the backup's signing key came from PAKU_OTA_SIGNING_KEY_FILE; it is now in $secrets_dir/ota-signing-key.pem (the default place)"
  fi
fi
if [ -d "$root/broker" ]; then
  put_dir "$root/broker" "$broker_dir" false
  chmod 700 "$broker_dir"
  target_broker=$(cd "$broker_dir" && pwd)
  if [ "$target_broker" != "$archive_broker_source" ]; then
    echo "note: the restored mosquitto.conf names paths under $archive_broker_source; \`paku-iot dev\`" \
      "rewrites it, for another broker run \`paku-iot broker-config --out $broker_dir\`"
  fi
fi

echo "restore complete. Start paku-iot again (run \`paku-iot migrate\` first if it is newer than $archive_version);" \
  "it brings the broker's password file up to date with the restored devices."
