#!/bin/sh
# Grafana's entrypoint in compose/dev.yaml: the admin password is generated on the first start
# into $GF_PATHS_DATA/admin-password (mode 0600, the grafana volume; nothing in git), handed to
# Grafana, then the image's own entrypoint runs. Sign in as admin with:
#   docker compose -f compose/dev.yaml exec grafana cat /var/lib/grafana/admin-password
# A volume from before this (admin/paku-dev-only) gets the new password set with
# `grafana cli admin reset-admin-password` on that first start.
set -eu
data=${GF_PATHS_DATA:-/var/lib/grafana}
file=$data/admin-password
umask 077
if [ ! -s "$file" ]; then
  password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
  [ "${#password}" -eq 32 ] || { echo "grafana: could not generate a password" >&2; exit 1; }
  printf '%s\n' "$password" >"$file.tmp"
  mv -f "$file.tmp" "$file"
  echo "grafana: generated the admin password into $file"
  if [ -f "$data/grafana.db" ]; then
    grafana cli --homepath "${GF_PATHS_HOME:-/usr/share/grafana}" \
      --config "${GF_PATHS_CONFIG:-/etc/grafana/grafana.ini}" \
      admin reset-admin-password "$password" >/dev/null
    echo "grafana: the existing admin user now has that password"
  fi
fi
chmod 600 "$file"
GF_SECURITY_ADMIN_PASSWORD=$(cat "$file")
export GF_SECURITY_ADMIN_PASSWORD
exec "${PAKU_GRAFANA_RUN:-/run.sh}" "$@"
