#!/bin/sh
# Entrypoint of the eclipse-mosquitto:2 container in compose/dev.yaml and compose/prod.yaml.
# POSIX sh: the image is Alpine (busybox), and the tests run it with dash and busybox.
#
# 1. Builds the broker's config from the one `paku-iot broker-config` wrote into the shared
#    broker directory, plus, when MOSQUITTO_TLS_CERT and MOSQUITTO_TLS_KEY are set, the TLS
#    listener snippet tls.conf (next to this script).
# 2. Starts a watcher in the background, then execs mosquitto (which keeps this PID: PID 1 in
#    the container, so `docker stop` reaches it directly).
# 3. The watcher compares the password files, the ACL files and the TLS sources every
#    MOSQUITTO_WATCH_INTERVAL seconds, by content (md5sum: a rewrite within the same second
#    is still seen), and SIGHUPs mosquitto when they change. paku-iot rewrites the password
#    file when devices are provisioned, rotated or deleted, but from its own container it
#    cannot signal this process; on SIGHUP Mosquitto 2.0 re-reads the password and ACL files
#    (dropping clients whose credentials changed or vanished) and its TLS certificates.
#    When the generated config itself changes (an upgrade's broker-init wrote a new one), the
#    watcher stops mosquitto instead: listeners change only with a restart, which the
#    container's restart policy does.
#
# Certificates: Mosquitto reads them again on every reload, after it has dropped root, so the
# watcher copies them (as root) into MOSQUITTO_RUN_DIR/tls, owned by the broker's user. That
# way a certificate store only root may read (Caddy's, certbot's) works, and renewals are
# picked up. If TLS is wanted but the files are not there yet (Caddy has not obtained the
# certificate on a first start), the broker starts without the TLS listener and the watcher
# stops it once they appear, so that the restart policy starts it again with the listener.
#
# Environment (all optional):
#   PAKU_BROKER_DIR           the directory broker-config wrote (default /paku/broker); it
#                             must be mounted at the same path as in the paku-iot containers
#   MOSQUITTO_TLS_CERT        certificate chain (PEM) for the TLS listener
#   MOSQUITTO_TLS_KEY         its private key (PEM)
#   MOSQUITTO_TLS_PORT        port of the TLS listener (default 8883)
#   MOSQUITTO_TLS_CONF        the listener snippet (default: tls.conf next to this script)
#   MOSQUITTO_RUN_DIR         where the effective config and the certificate copies go
#                             (default /mosquitto/paku)
#   MOSQUITTO_BIN             the broker binary (default: mosquitto on PATH)
#   MOSQUITTO_WATCH_INTERVAL  seconds between checks (default 1)
set -eu

broker_dir=${PAKU_BROKER_DIR:-/paku/broker}
run_dir=${MOSQUITTO_RUN_DIR:-/mosquitto/paku}
mosquitto_bin=${MOSQUITTO_BIN:-mosquitto}
interval=${MOSQUITTO_WATCH_INTERVAL:-1}
tls_cert=${MOSQUITTO_TLS_CERT:-}
tls_key=${MOSQUITTO_TLS_KEY:-}
tls_port=${MOSQUITTO_TLS_PORT:-8883}
tls_conf=${MOSQUITTO_TLS_CONF:-$(dirname "$0")/tls.conf}

generated=$broker_dir/mosquitto.conf
effective=$run_dir/mosquitto.conf
tls_dir=$run_dir/tls

log() {
  echo "paku-mosquitto: $*" >&2
}

if [ ! -r "$generated" ]; then
  log "no broker config at $generated: run \`paku-iot broker-config --out $broker_dir\` first" \
    "(compose runs it as the broker-init service)"
  exit 1
fi
if [ -n "$tls_cert$tls_key" ] && { [ -z "$tls_cert" ] || [ -z "$tls_key" ]; }; then
  log "set both MOSQUITTO_TLS_CERT and MOSQUITTO_TLS_KEY, or neither"
  exit 1
fi
if [ -n "$tls_cert" ] && [ ! -r "$tls_conf" ]; then
  log "no TLS listener snippet at $tls_conf"
  exit 1
fi

# The user Mosquitto switches to when started as root (the generated `user` line).
run_user=$(sed -n 's/^user[[:space:]]\{1,\}\([^[:space:]]\{1,\}\).*/\1/p' "$generated" | tail -n 1)

tls_files_present() {
  [ -n "$tls_cert" ] && [ -r "$tls_cert" ] && [ -r "$tls_key" ]
}

# Copy the certificate and key where the broker's user can read them, each atomically.
copy_tls() {
  mkdir -p "$tls_dir"
  chmod 0700 "$tls_dir"
  cp "$tls_cert" "$tls_dir/.cert.pem.tmp"
  cp "$tls_key" "$tls_dir/.key.pem.tmp"
  chmod 0600 "$tls_dir/.cert.pem.tmp" "$tls_dir/.key.pem.tmp"
  if [ "$(id -u)" = 0 ] && [ -n "$run_user" ] && [ "$run_user" != root ]; then
    chown "$run_user" "$tls_dir" "$tls_dir/.cert.pem.tmp" "$tls_dir/.key.pem.tmp"
  fi
  mv -f "$tls_dir/.cert.pem.tmp" "$tls_dir/cert.pem"
  mv -f "$tls_dir/.key.pem.tmp" "$tls_dir/key.pem"
}

tls_active=false
if [ -n "$tls_cert" ]; then
  if tls_files_present; then
    copy_tls
    tls_active=true
  else
    log "WARNING: no certificate at $tls_cert or no key at $tls_key yet: starting without" \
      "the TLS listener on port $tls_port; the broker restarts with it once both exist"
  fi
fi

# The effective config: the generated one as it is, then the TLS listener. Mosquitto reads it
# again on SIGHUP as its own user, so it is world-readable (it holds paths, no secrets).
mkdir -p "$run_dir"
chmod 0755 "$run_dir"
{
  echo "# Written by compose/mosquitto/entrypoint.sh at every start: $generated"
  cat "$generated"
  if [ "$tls_active" = true ]; then
    echo
    echo "# TLS listener, from $tls_conf"
    sed -e "s|@TLS_PORT@|$tls_port|g" -e "s|@TLS_DIR@|$tls_dir|g" \
      -e "s|@BROKER_DIR@|$broker_dir|g" "$tls_conf"
  fi
} >"$effective.tmp"
chmod 0644 "$effective.tmp"
mv -f "$effective.tmp" "$effective"

# One line per watched file: its checksum, or "missing".
fingerprint() {
  for file in "$@"; do
    if [ -r "$file" ]; then
      md5sum <"$file"
    else
      echo missing
    fi
  done
}

# Mosquitto dies of a SIGHUP that arrives before it has installed its handler (while it
# still loads a large persistence file, say): wait until /proc says the handler is there.
hup_handled() {
  [ -r "/proc/$1/status" ] || return 0 # no /proc: nothing to ask
  caught=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$1/status")
  [ -n "$caught" ] || return 0
  last_digit=${caught#"${caught%?}"}
  [ $((0x$last_digit & 1)) -eq 1 ] # SIGHUP is signal 1: the lowest bit
}

watch() {
  set +e # a file that vanishes between two looks must not end the watcher
  broker_pid=$1
  auth_seen=$(fingerprint "$broker_dir/passwd" "$broker_dir/acl" "$broker_dir/backend-passwd" \
    "$broker_dir/backend-acl")
  config_seen=$(fingerprint "$generated" "$tls_conf")
  tls_seen=""
  if [ -n "$tls_cert" ]; then
    tls_seen=$(fingerprint "$tls_cert" "$tls_key")
  fi
  while sleep "$interval"; do
    kill -0 "$broker_pid" 2>/dev/null || exit 0
    # Listeners are not changed by a reload: a new config (an upgrade's broker-init) takes a
    # restart, which the restart policy does once the broker has stopped.
    if [ "$(fingerprint "$generated" "$tls_conf")" != "$config_seen" ]; then
      log "the generated config changed (broker-config ran again): stopping mosquitto so" \
        "that it starts again with it"
      kill -TERM "$broker_pid" 2>/dev/null || true
      exit 0
    fi
    auth_now=$(fingerprint "$broker_dir/passwd" "$broker_dir/acl" "$broker_dir/backend-passwd" \
    "$broker_dir/backend-acl")
    tls_now=""
    if [ -n "$tls_cert" ]; then
      tls_now=$(fingerprint "$tls_cert" "$tls_key")
    fi
    if [ "$auth_now" = "$auth_seen" ] && [ "$tls_now" = "$tls_seen" ]; then
      continue
    fi
    if [ "$tls_active" = false ] && tls_files_present; then
      log "the TLS certificate and key are there now: stopping mosquitto so that it starts" \
        "again with the TLS listener"
      kill -TERM "$broker_pid" 2>/dev/null || true
      exit 0
    fi
    hup_handled "$broker_pid" || continue # not yet: try again on the next tick
    reason="password or ACL file changed"
    if [ "$tls_now" != "$tls_seen" ] && [ "$tls_active" = true ]; then
      if tls_files_present && copy_tls; then
        reason="TLS certificate changed"
      else
        log "WARNING: could not copy the TLS certificate and key; the broker keeps the old ones"
      fi
    fi
    if kill -HUP "$broker_pid" 2>/dev/null; then
      log "$reason: reloaded mosquitto (pid $broker_pid)"
    fi
    auth_seen=$auth_now
    tls_seen=$tls_now
  done
}

# In a subshell $$ is still this shell's PID, which the exec below hands to mosquitto.
watch "$$" &

exec "$mosquitto_bin" -c "$effective"
