#!/bin/sh
# LOCAL STAND-IN for the eclipse-mosquitto image's /docker-entrypoint.sh (see ../README.md):
# as root, hand /mosquitto to the mosquitto user, then run the command.
set -e

if [ "$(id -u)" = '0' ]; then
  if [ -d /mosquitto ]; then
    chown -R mosquitto:mosquitto /mosquitto || true
  fi
fi

exec "$@"
