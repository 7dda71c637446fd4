# syntax=docker/dockerfile:1
#
# Abacus production image: one image for every role (ingest, worker, rollup, query-api, jobs, migrate, token, status);
# the role is the command, e.g. `docker run IMAGE worker`. It talks to a Redis and a ClickHouse
# *server* (see docker-compose.yml); the `embedded` extra (chDB + Valkey, for `abacus serve`) is
# deliberately left out.
#
#   docker build -t abacus .
#   docker run --rm abacus --help

ARG PYTHON_IMAGE=python:3.11-slim

# ----- build: resolve exactly what uv.lock says into /app/.venv ----------------------------------
FROM ${PYTHON_IMAGE} AS build

# uv comes from PyPI, the same place the dependencies come from. 0.13 reads uv.lock revision 5.
ARG UV_VERSION=0.13.9
RUN python -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a wheel would be (not editable): the migrations and the
# seed are package data read through importlib.resources, so nothing needs the source tree.
COPY abacus ./abacus
COPY ingest ./ingest
COPY worker ./worker
COPY query_api ./query_api
COPY shared ./shared
COPY sdk ./sdk
COPY jobs ./jobs
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ----- runtime: no uv, no build tools, not root ------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="abacus" \
      org.opencontainers.image.description="Experiment pipeline: beacon ingest -> Redis stream -> worker -> ClickHouse, with a query API" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 abacus \
    && useradd --system --uid 10001 --gid abacus --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin abacus

# Only the virtual environment (same path as in the build stage: its scripts name
# /app/.venv/bin/python) and the compose health check; no source tree beside it, so the image
# runs what the wheel installed. Owned by root: the service user can read the code, not change it.
COPY --from=build /app/.venv /app/.venv
COPY deploy/healthcheck.py /app/deploy/healthcheck.py

ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# docker-compose.yml's health checks run deploy/healthcheck.py relative to this directory.
WORKDIR /app
USER 10001:10001

# Fail the build, not the first deploy, if the script or a role's imports are broken or the
# package data (migrations, seed) did not make it into the installed packages.
RUN abacus --help >/dev/null \
    && python -c "import ingest.app, query_api.app, worker.main, jobs.runner, shared.clickhouse as ch, query_api.registry_seed as seed; assert ch.migrations(), ch.MIGRATIONS_PACKAGE; seed.load_seed(seed.example_seed())"

EXPOSE 8001 8002 9400
ENTRYPOINT ["abacus"]
# Each role needs its own settings (ABACUS_REDIS_URL, ABACUS_CLICKHOUSE_URL, ...), so there is no
# single right default service: print the commands. docker-compose.yml names one per service.
CMD ["--help"]
