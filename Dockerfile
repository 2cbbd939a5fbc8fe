# One image for every Python service (gateway, worker, monitoring, migrate, autoscaler, load-test);
# docker-compose.yml picks the process with `command:`.
#
# Build arguments, for machines with no registry or package index (OFFLINE_IMAGES=1, see
# docker-compose.offline.yml): PYTHON_IMAGE names a local stand-in for the official Python image,
# PIP_OPTIONS points pip at the wheels prepared on the host in docker/wheels/.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# Builder: the pinned dependencies into a virtualenv (every one ships a manylinux wheel, so no
# compiler is needed), then the project itself; a source change rebuilds only the last layer.
FROM ${PYTHON_IMAGE} AS builder
ARG PIP_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY docker/wheels/ /wheels/
COPY pyproject.toml ./
# hadolint ignore=SC2086
RUN python -m venv /opt/venv \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >requirements.txt \
 && /opt/venv/bin/pip install $PIP_OPTIONS -r requirements.txt
COPY core/ core/
COPY api_gateway/ api_gateway/
COPY worker_service/ worker_service/
COPY monitoring/ monitoring/
COPY autoscaler/ autoscaler/
COPY native/ native/
COPY benchmarks/ benchmarks/
# hadolint ignore=SC2086
RUN /opt/venv/bin/pip install $PIP_OPTIONS --no-deps .

# Final: the same base with only the virtualenv; no build tools, no wheels, no source tree.
FROM ${PYTHON_IMAGE}
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
