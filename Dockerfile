# facemedia worker image. Build: docker build -t facemedia .
# Run: docker run --env-file prod.env facemedia   (queues: -Q media | privacy | research)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY worker ./worker
COPY pipelines ./pipelines
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .

FROM python:3.11-slim
# libGL and glib: opencv-python (not -headless) needs them at import.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/facemedia --create-home facemedia
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
COPY alembic.ini /app/alembic.ini
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FACEMEDIA_HOME=/var/lib/facemedia \
    FACEMEDIA_CONFIG=/app/config/production.toml
USER facemedia
# Celery's warm shutdown: finish the job in flight (acks late hands it back otherwise).
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "media", "--loglevel", "INFO"]
