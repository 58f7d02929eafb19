#!/usr/bin/env bash
# LOCAL STAND-IN for the postgres image's docker-entrypoint.sh (see ../README.md), with the
# same contract, shorter:
# - `postgres` started as root: make PGDATA and the socket directory the postgres user's,
#   then run this script again as that user (gosu);
# - PGDATA without PG_VERSION: refuse to start without POSTGRES_PASSWORD (or
#   POSTGRES_PASSWORD_FILE) unless POSTGRES_HOST_AUTH_METHOD=trust; initdb with
#   POSTGRES_USER (default postgres) and that password; allow connections from the network
#   with POSTGRES_HOST_AUTH_METHOD (default scram-sha-256); start a server on the socket only,
#   create POSTGRES_DB (default: the user's name), run /docker-entrypoint-initdb.d/*.sh and
#   *.sql, stop it;
# - then exec postgres (which keeps PID 1). A data directory that exists is never touched.
# Any other command is run as it is.
set -Eeo pipefail

# VAR from VAR or from the file VAR_FILE names, never both.
file_env() {
  local var=$1 file_var="${1}_FILE" default=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo >&2 "error: both $var and $file_var are set (but are exclusive)"
    exit 1
  fi
  local value=$default
  if [ -n "${!var:-}" ]; then
    value=${!var}
  elif [ -n "${!file_var:-}" ]; then
    value=$(<"${!file_var}")
  fi
  export "$var"="$value"
  unset "$file_var"
}

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
  exec "$@"
fi

if [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 00700 "$PGDATA"
  mkdir -p /var/run/postgresql
  chown postgres:postgres /var/run/postgresql
  chmod 03775 /var/run/postgresql
  exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

  if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != 'trust' ]; then
    cat >&2 <<'EOM'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
EOM
    exit 1
  fi

  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    $POSTGRES_INITDB_ARGS
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
  psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  if [ "$POSTGRES_DB" != 'postgres' ]; then
    "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    # shellcheck disable=SC1090 # the initdb.d scripts are the user's
    case "$f" in
      *.sh) echo "$0: running $f" && . "$f" ;;
      *.sql) echo "$0: running $f" && "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *) [ -e "$f" ] && echo "$0: ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo
  echo 'PostgreSQL init process complete; ready for start up.'
  echo
else
  echo
  echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
  echo
fi

exec "$@"
