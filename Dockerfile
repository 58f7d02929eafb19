# The paku-iot image: one Python package, one command. compose/dev.yaml and compose/prod.yaml
# run it as the API + collector (`paku-iot serve`, the default), as the one-shot broker-config
# and migrate steps, and (prod) as the backup job.
#
#   docker build -t paku-iot .
#
# Stage 1 installs the runtime dependencies into a virtual environment from the lock
# requirements/runtime.txt (exact versions; pip refuses any file whose hash the lock does not
# list), then builds paku-iot's wheel and adds it without dependencies; stage 2 copies only
# that environment into a clean slim image. Both stages use the same base image, so the
# environment's interpreter path (/usr/local/bin/python3.11) exists in both.
#
# Debian bookworm is pinned (not whatever python:3.11-slim points at next) because the runtime
# carries PostgreSQL 15's client tools for scripts/backup.sh and scripts/restore.sh, and they
# must match the postgres:15 server in the compose files (pg_dump of a newer major version
# writes dumps an older server cannot restore).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The lock first, so that the dependency layer is rebuilt only when the lock changes.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN python -m venv /opt/paku \
 && /opt/paku/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt
# Only what the wheel needs (.dockerignore keeps everything else out of the build context).
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /dist . \
 && /opt/paku/bin/pip install --no-deps /dist/*.whl \
 && /opt/paku/bin/pip check


FROM ${PYTHON_IMAGE} AS runtime

# The uid/gid 1883 is deliberate: it is the `mosquitto` user of the eclipse-mosquitto image.
# paku-iot writes the broker's password file and Mosquitto (after dropping root) reads it,
# through one shared directory; with the same uid on both sides the files can stay 0600.
ARG PAKU_UID=1883

# bash, tar and gzip are in the base image; scripts/backup.sh and restore.sh also need
# pg_dump, pg_restore and psql (Debian bookworm: PostgreSQL 15), and age for encrypted archives.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client age \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "${PAKU_UID}" paku \
 && useradd --system --uid "${PAKU_UID}" --gid paku --home-dir /paku --no-create-home \
      --shell /usr/sbin/nologin paku \
 && install -d -o paku -g paku -m 0755 /paku \
 && install -d -o paku -g paku -m 0700 /paku/data /paku/broker /paku/backups

COPY --from=build /opt/paku /opt/paku

# PAKU_HTTP_HOST: listen on the container's interfaces, not only its loopback.
# PAKU_DATA_DIR: generated secrets (admin token when unset, OTA signing key) and firmware.
#   Mount a volume here: losing the signing key means devices that pinned it refuse updates.
ENV PATH=/opt/paku/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAKU_HTTP_HOST=0.0.0.0 \
    PAKU_HTTP_PORT=8000 \
    PAKU_DATA_DIR=/paku/data

USER paku
WORKDIR /paku
EXPOSE 8000

# 200 only when the database and the broker are reachable (503 otherwise, which urlopen
# raises on): no curl in the slim image, so the standard library asks. A collector-only
# replica (`serve --role collector`) has no HTTP server: disable or replace this check there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PAKU_HTTP_PORT', '8000'), timeout=4)"]

CMD ["paku-iot", "serve"]
