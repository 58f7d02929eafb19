#!/usr/bin/env bash
# The database roles paku-iot's compose files use, made (or brought up to date) on every `up`
# by the one-shot db-init service, before migrate. Idempotent; safe on a new install and on
# one made before these roles existed (the upgrade path: docs/operations.md, "Upgrades").
#
# - PAKU_DB_APP_ROLE (paku_app): what paku-iot (API, collector, migrate, backup, restore)
#   connects as. LOGIN with PAKU_DB_APP_PASSWORD, NOSUPERUSER NOCREATEDB NOCREATEROLE
#   NOREPLICATION NOBYPASSRLS; may create tables in the schema public (migrations, the daily
#   telemetry partitions) and owns every table, sequence, view, type and function there:
#   whatever an older install's superuser owned is handed over (ALTER ... OWNER TO).
# - PAKU_DB_READONLY_ROLE (paku_grafana), only when PAKU_DB_READONLY_PASSWORD is set: LOGIN,
#   SELECT on paku-iot's tables (those made later by the app role too), read-only
#   transactions, nothing else. Grafana's data source uses it (compose/dev.yaml).
# - The superuser this connects as (POSTGRES_USER of the postgres service) loses its password
#   (PASSWORD NULL) once the app role exists: it cannot log in over the network any more, only
#   from inside the postgres container (`docker compose exec postgres psql -U paku paku`), where
#   the image's pg_hba.conf trusts local connections. That is also how this script connects:
#   the db-init service shares the postgres container's network (127.0.0.1).
#
# Connection: the libpq variables (PGHOST, PGUSER, PGDATABASE...), as a superuser.
set -euo pipefail

app=${PAKU_DB_APP_ROLE:-paku_app}
app_password=${PAKU_DB_APP_PASSWORD:?set PAKU_DB_APP_PASSWORD: the password of the application role}
readonly_role=${PAKU_DB_READONLY_ROLE:-paku_grafana}
readonly_password=${PAKU_DB_READONLY_PASSWORD:-}
keep_superuser_password=${PAKU_DB_KEEP_SUPERUSER_PASSWORD:-false}

# While the image initialises a new cluster, a temporary server listens on its socket only:
# wait for the real one on TCP (up to a minute).
for _ in $(seq 1 60); do
  pg_isready --quiet && break
  sleep 1
done

psql=(psql --no-psqlrc --no-password --quiet --set=ON_ERROR_STOP=1 --single-transaction --file=-
  --set=app="$app" --set=app_password="$app_password"
  --set=ro="$readonly_role" --set=ro_password="$readonly_password")

"${psql[@]}" <<'SQL'
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I', :'app')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'app_password';
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'app') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"app";

-- Everything in the schema public is the app role's: tables (partitions one by one: a
-- partitioned table's owner does not pass to them), views, sequences that no column owns
-- (those follow their table), types and functions.
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                             WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
              n.nspname, c.relname, :'app')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
   AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app')
   AND NOT (c.relkind = 'S' AND EXISTS (
         SELECT 1 FROM pg_depend d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
 ORDER BY c.relkind = 'S', c.oid \gexec
SELECT format('ALTER TYPE %I.%I OWNER TO %I', n.nspname, t.typname, :'app')
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')
   AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app') \gexec
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, :'app')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \gexec

-- The read-only role, when it has a password.
SELECT format('CREATE ROLE %I', :'ro')
  WHERE :'ro_password' <> '' AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'ro') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'ro', :'ro_password') WHERE :'ro_password' <> '' \gexec
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'ro')
  WHERE :'ro_password' <> '' \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'ro')
  WHERE :'ro_password' <> '' \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'ro') WHERE :'ro_password' <> '' \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', :'ro')
  WHERE :'ro_password' <> '' \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT ON TABLES TO %I',
              :'app', :'ro') WHERE :'ro_password' <> '' \gexec
SQL

if [ "$keep_superuser_password" != true ]; then
  "${psql[@]}" <<'SQL'
SELECT format('ALTER ROLE %I PASSWORD NULL', current_user)
  WHERE current_user <> :'app' AND current_user <> :'ro' \gexec
SQL
fi
echo "db-init: role $app owns paku-iot's tables${readonly_password:+; $readonly_role may read them}"
