# syntax=docker/dockerfile:1
#
# One image for every service of the messaging backend. The service is chosen
# by the command: the entry point is `python -m`, so
#
#   docker run messenger gateway            # python -m gateway
#   docker run messenger persister          # python -m persister
#   docker run messenger libs.bootstrap     # one-shot: topics, indexes, sharding
#
# Configuration is by environment only (see docs/deployment.md); the image
# carries no config files and no secrets.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# build: resolve and install the dependencies and the project into a venv.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, in their own layer, so a code change does not reinstall them.
# requirements.lock is compiled with the dev extra (pytest, ruff, schema
# validators...), which has no place in a production image. So the runtime
# requirements are read from pyproject.toml's [project.dependencies] and the lock
# is applied as constraints: exactly the locked versions, and only what the
# services import. --only-binary keeps compilers out of the slim image: every
# locked package ships wheels for CPython 3.11 on manylinux x86_64 and aarch64.
COPY pyproject.toml requirements.lock ./
RUN python - <<'PY' > runtime-requirements.txt
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
RUN pip install --only-binary=:all: -c requirements.lock -r runtime-requirements.txt

# Then the project itself: non-editable (the code lands in site-packages), with
# no dependency resolution (they are in), and `pip check` proves the set whole.
COPY . .
RUN pip install --no-deps . && pip check

# ---------------------------------------------------------------------------
# runtime: the venv on a clean slim base, run as an unprivileged user.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="messenger" \
      org.opencontainers.image.description="Event-driven chat backend: gateway, user/group/message/delivery services, persister, notifier" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without
# reading /etc/passwd, and so volume ownership is predictable.
ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} app \
 && useradd --system --uid ${APP_UID} --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1

# Nothing is read from the working directory: the project is installed in the
# venv's site-packages, so the root filesystem can be mounted read-only.
WORKDIR /app
USER ${APP_UID}:${APP_UID}

# The services drain in-flight work on SIGTERM (SHUTDOWN_GRACE_SECONDS).
STOPSIGNAL SIGTERM

# Health is probed over HTTP on each service's own port (/healthz, /readyz),
# which differs per service, so the orchestrator defines it (compose, k8s).
ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
