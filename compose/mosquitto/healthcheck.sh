#!/bin/sh
# Healthcheck of the mosquitto service: healthy when the broker accepts the backend's own
# credentials and acknowledges a subscription on the backend's listener (the first one in the
# generated config). It takes the port from the generated config and the password from the
# file broker-config wrote, so it needs no settings of its own. (The eclipse-mosquitto image ships mosquitto_sub.)
#
# Environment (optional): PAKU_BROKER_DIR (default /paku/broker), PAKU_MQTT_USERNAME
# (default paku.backend).
set -eu

broker_dir=${PAKU_BROKER_DIR:-/paku/broker}
username=${PAKU_MQTT_USERNAME:-paku.backend}

port=$(sed -n 's/^listener[[:space:]]\{1,\}\([0-9]\{1,\}\).*/\1/p' "$broker_dir/mosquitto.conf" | head -n 1)
password=$(cat "$broker_dir/backend-password")

exec mosquitto_sub -h 127.0.0.1 -p "${port:-1883}" -u "$username" -P "$password" \
  -t paku/healthcheck -E -W 5 -q 0
