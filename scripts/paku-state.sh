# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # sets variables for, and uses $python of, its caller
# Shared by backup.sh and restore.sh: where paku-iot keeps its state, with the same defaults as
# paku_iot.settings (data_dir, firmware_dir, secrets_dir = Settings.secrets_dir, broker_dir,
# the database URL), and PAKU_DATABASE_URL taken apart for the PostgreSQL/SQLite tools.
# Where it differs from paku-iot: it reads only PAKU_* environment variables, not .env or a
# YAML config file (it runs without paku-iot installed); when one of those exists it warns.
# Expects $python and the functions warn and die from the script that sources it. Sets
# data_dir firmware_dir secrets_dir broker_dir signing_key_file database_url, and
# db_kind db_target db_password.

data_dir=${PAKU_DATA_DIR:-var}
firmware_dir=${PAKU_OTA_DIR:-$data_dir/firmware}
secrets_dir=$data_dir/secrets
broker_dir=${PAKU_BROKER_DIR:-$data_dir/broker}
signing_key_file=${PAKU_OTA_SIGNING_KEY_FILE:-}
database_url=${PAKU_DATABASE_URL:-sqlite:///$data_dir/paku.db}

if [ -n "${PAKU_CONFIG_FILE:-}" ] || [ -f .env ] || [ -f config/config.yml ] || [ -f config.yml ]; then
  warn "only PAKU_* environment variables are read; settings in .env or a config file are ignored"
fi

# Prints: kind, then the database (SQLite path, or a libpq URI without its password), then
# the password (possibly empty), one per line.
parse_database_url() {
  "$python" - "$1" <<'PY'
import sys
import urllib.parse as up

url = sys.argv[1]
scheme, sep, rest = url.partition("://")
backend = scheme.split("+", 1)[0].lower()
if not sep:
    sys.exit(f"PAKU_DATABASE_URL is not a database URL: {url!r}")
if backend == "sqlite":
    path = up.unquote(rest.split("?", 1)[0])
    if not path.startswith("/") or path in ("/", "/:memory:"):
        sys.exit("PAKU_DATABASE_URL: an SQLite URL must name a file: sqlite:///path/to/paku.db")
    print("sqlite", path[1:], "", sep="\n")
elif backend in ("postgresql", "postgres"):
    parts = up.urlsplit("postgresql://" + rest)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    password = up.unquote(parts.password) if parts.password is not None else ""
    netloc = f"{user}@{hostport}" if user else hostport
    query = up.parse_qsl(parts.query, keep_blank_values=True)
    # asyncpg spells libpq's sslmode "ssl"
    if not any(k == "sslmode" for k, _ in query):
        query = [("sslmode", "require" if v.lower() in ("true", "1") else v) if k == "ssl" else (k, v)
                 for k, v in query]
    plain = up.urlunsplit(("postgresql", netloc, parts.path, up.urlencode(query), ""))
    print("postgresql", plain, password, sep="\n")
else:
    sys.exit(f"PAKU_DATABASE_URL must be a sqlite:/// or postgresql:// URL, got {backend!r}")
PY
}

parsed=$(parse_database_url "$database_url") || die "cannot use PAKU_DATABASE_URL"
{
  IFS= read -r db_kind
  IFS= read -r db_target
  IFS= read -r db_password || true
} <<<"$parsed"
