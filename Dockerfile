# One image for every Python service (gateway, worker, monitoring, migrate, load-test);
# docker-compose.yml picks the process with `command:`.

# Builder: resolve the pinned dependencies to wheels (every one ships a manylinux wheel, so no
# compiler is needed even here) and install them with the project into a virtualenv.
FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
COPY core/ core/
COPY api_gateway/ api_gateway/
COPY worker_service/ worker_service/
COPY monitoring/ monitoring/
COPY autoscaler/ autoscaler/
COPY native/ native/
COPY benchmarks/ benchmarks/
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl

# Final: the same pinned base with only the virtualenv; no build tools, no wheels, no source tree.
FROM python:3.11.13-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app/reports \
 && chown app:app /app/reports
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# Health checks live in docker-compose.yml: each service's differs (port, path).
CMD ["python", "-m", "api_gateway"]
