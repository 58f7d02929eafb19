#!/bin/sh
# Makes sure a Docker engine answers on this machine, for the tests that run the compose
# stacks on a real engine (tests/containers/). `make docker-engine` runs it.
#
# 1. Installs what is missing with apt (as the Makefile's other *-tools targets do): Debian's
#    docker.io (dockerd, containerd, runc), docker-compose 1.29 and mmdebstrap (which builds
#    the base of the local stand-in images, tests/containers/standins/).
# 2. When `docker info` does not answer, starts dockerd in the background (it must run as
#    root), its output in PAKU_DOCKERD_LOG, and waits until `docker info` answers.
#
# A machine whose engine already runs (Docker Desktop, a systemd service) is left as it is.
#
# Exit status: 0 when the engine answers; 1 when it cannot be started (the reason on stderr,
# and the end of dockerd's log).
#
# Environment (all optional):
#   PAKU_DOCKERD_LOG      dockerd's output (default /var/log/paku-dockerd.log)
#   PAKU_DOCKERD_TIMEOUT  seconds to wait for the engine (default 60)
set -eu

log=${PAKU_DOCKERD_LOG:-/var/log/paku-dockerd.log}
timeout=${PAKU_DOCKERD_TIMEOUT:-60}

say() {
  echo "docker-engine: $*" >&2
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi

missing=""
command -v dockerd >/dev/null || missing="$missing docker.io"
command -v docker >/dev/null || missing="$missing docker.io"
command -v docker-compose >/dev/null || missing="$missing docker-compose"
command -v mmdebstrap >/dev/null || missing="$missing mmdebstrap"
if [ -n "$missing" ]; then
  say "installing with apt:$missing"
  # shellcheck disable=SC2086 # one word per package
  if ! { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null; }; then
    say "could not install$missing"
    exit 1
  fi
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "no Docker engine answers and dockerd must be started as root: start it" \
    "(e.g. 'sudo systemctl start docker') or run this as root"
  exit 1
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  say "starting dockerd (log: $log)"
  mkdir -p "$(dirname "$log")"
  # setsid: the engine outlives the make or pytest that started it (its containers too).
  setsid dockerd >>"$log" 2>&1 </dev/null &
fi

waited=0
until docker info >/dev/null 2>&1; do
  if [ "$waited" -ge "$timeout" ]; then
    say "the engine did not answer within ${timeout}s; the end of $log:"
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
say "the engine answers ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
