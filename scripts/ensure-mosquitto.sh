#!/usr/bin/env bash
# Make sure the mosquitto broker binary (and its command-line clients) are installed.
# Installs them with apt-get or brew when it can; otherwise says exactly what to do.
set -euo pipefail

have_broker() {
  command -v mosquitto >/dev/null 2>&1 && return 0
  for dir in /usr/sbin /usr/local/sbin /opt/homebrew/sbin /usr/local/opt/mosquitto/sbin; do
    [ -x "$dir/mosquitto" ] && return 0
  done
  return 1
}

have_clients() { command -v mosquitto_pub >/dev/null 2>&1; }

if have_broker && have_clients; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "mosquitto is missing: run 'apt-get install mosquitto mosquitto-clients' as root" >&2
      exit 1
    fi
  fi
  echo "installing mosquitto with apt-get..."
  service_was_there=0
  have_broker && service_was_there=1
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  if [ "$service_was_there" -eq 0 ] && command -v systemctl >/dev/null 2>&1 \
      && systemctl is-active --quiet mosquitto 2>/dev/null; then
    # Debian starts a system broker on port 1883 right after installing it; paku-iot dev runs
    # its own broker there, so the one we just installed is stopped and not started at boot.
    echo "stopping the system mosquitto service that apt-get started (paku-iot dev runs its own)"
    $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
elif command -v brew >/dev/null 2>&1; then
  echo "installing mosquitto with Homebrew..."
  brew install mosquitto
else
  cat >&2 <<'MSG'
paku-iot needs the mosquitto broker and its clients, and could not install them here.
  Debian/Ubuntu:  sudo apt-get install mosquitto mosquitto-clients
  Fedora:         sudo dnf install mosquitto
  macOS:          brew install mosquitto
Or set PAKU_MOSQUITTO_BIN to the path of a mosquitto binary.
MSG
  exit 1
fi

have_broker || { echo "mosquitto is still not installed" >&2; exit 1; }
