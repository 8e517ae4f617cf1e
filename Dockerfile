# Switchboard image: gunicorn + uvicorn workers, non-root, dependencies from the pinned lock.
# Build: docker build -t switchboard .   Run: see docker-compose.yml and docs/deploy.md.

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

FROM python:3.11.7-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/switchboard-metrics
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/switchboard
COPY app ./app
COPY gunicorn.conf.py ./
USER 10001
EXPOSE 8000
# Liveness only: /healthz never depends on Redis (readiness is /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
