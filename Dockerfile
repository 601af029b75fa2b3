# syntax=docker/dockerfile:1
# Switchyard production image (README "Production"): multi-stage, slim, non-root. Every dependency
# installs from a binary wheel, so neither stage needs a compiler and the final one has none.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the dependencies, and the collected static files --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first (pyproject.toml alone), so code changes reuse this layer.
COPY pyproject.toml /tmp/deps/pyproject.toml
RUN pip install --upgrade pip && pip install /tmp/deps && rm -rf /tmp/deps
WORKDIR /app
COPY . .
# WhiteNoise's compressed, hashed copies and manifest; the settings need some key to load.
RUN SECRET_KEY=collectstatic-only DEBUG=0 SWITCHYARD_VAR_DIR=/tmp/var SWITCHYARD_STATIC_MANIFEST=1 \
    SWITCHYARD_ENCRYPTION_KEYS=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    python manage.py collectstatic --noinput -v0 \
    && python -m compileall -q /app

# ---- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHYARD_VAR_DIR=/var/lib/switchyard \
    HOST=0.0.0.0 \
    PORT=8000
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --no-create-home --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard \
    && chown switchyard:switchyard /var/lib/switchyard
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER switchyard:switchyard
EXPOSE 8000
# Liveness only; orchestrators should gate traffic on /readyz (compose.yaml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# Web by default (workers: $WEB_CONCURRENCY, else one per CPU); the same image runs
# `celery -A switchyard worker` and `celery -A switchyard beat`.
CMD ["python", "manage.py", "serve"]
