"""Views for reading telemetry values from outside paku-iot (Grafana, issue 19).

`telemetry_numeric(device_id, ts, field, value)`: one row per numeric value of a sample, for
top-level fields and fields one object deep (`boiler.temp`), the device's own `ts` left out
(it is the row's `ts`). A view, not a table: nothing to keep in sync, and a query's `ts` bound
reaches the partitions of `telemetry` underneath it.

PostgreSQL: the read-only role compose makes for Grafana (compose/postgres/roles.sh,
`paku_grafana`) gets SELECT when it exists; roles.sh's default privileges would grant it too
when the app role runs this, but a database migrated by another role would not have them.
SQLite: the same view over json_tree, so both schemas have the same relations (Grafana only
reads PostgreSQL).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Numbers beyond double precision (jsonb keeps any size) are NULL rather than an error that
# would fail the whole query of a dashboard panel.
_POSTGRESQL_VIEW = """
CREATE VIEW telemetry_numeric AS
SELECT t.device_id, t.ts, f.field,
       CASE WHEN abs(f.n) < 1e308 THEN f.n::double precision END AS value
  FROM telemetry t
  CROSS JOIN LATERAL (
    SELECT e.key AS field, (e.value #>> '{}')::numeric AS n
      FROM jsonb_each(t.payload) e
     WHERE jsonb_typeof(e.value) = 'number' AND e.key <> 'ts'
    UNION ALL
    SELECT o.key || '.' || i.key, (i.value #>> '{}')::numeric
      FROM jsonb_each(t.payload) o
      CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(o.value) = 'object'
                                         THEN o.value ELSE '{}'::jsonb END) i
     WHERE jsonb_typeof(i.value) = 'number'
  ) f
"""

_GRANT = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paku_grafana') THEN
    GRANT SELECT ON telemetry_numeric TO paku_grafana;
  END IF;
END
$$
"""

# json_tree, not json_each on each value: json_each fails on a string that is not JSON text.
# `path` is '$' for top-level fields and '$.outer' one object deep; array elements (integer
# keys) and anything deeper are left out, as on PostgreSQL.
_SQLITE_VIEW = """
CREATE VIEW telemetry_numeric AS
SELECT t.device_id, t.ts,
       CASE WHEN j.path = '$' THEN j.key ELSE substr(j.path, 3) || '.' || j.key END AS field,
       j.value AS value
  FROM telemetry t, json_tree(t.payload) j
 WHERE j.type IN ('integer', 'real') AND typeof(j.key) = 'text'
   AND ((j.path = '$' AND j.key <> 'ts')
        OR (j.path NOT LIKE '$.%.%' AND j.path NOT LIKE '%[%' AND j.path LIKE '$.%'))
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRESQL_VIEW)
        op.execute(_GRANT)
    else:
        op.execute(_SQLITE_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS telemetry_numeric")
