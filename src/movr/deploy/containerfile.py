"""The Containerfile of the MovR app image: build the wheels in one stage, run `movr serve` from a slim one.

The image runs as a numeric non-root user (Kubernetes can then check `runAsNonRoot` without a passwd
file), writes nothing outside /tmp (so the pod can mount its root file system read-only), and takes its
listening port from the environment (`PORT`). Everything else `movr serve` needs (`MOVR_DATABASE_URL`,
`MOVR_REGION`, `MOVR_PRESET`, `MOVR_SECRET_KEY`) comes from the environment the orchestrator gives it.
"""

from __future__ import annotations

import json

from movr import __version__

DISTRIBUTION = "movr-global"
PYTHON_VERSION = "3.11"  # the oldest Python the project supports, and the one its tests run on
APP_PORT = 8080
APP_UID = 10001
# What of the repository the wheel is built from (pyproject.toml names README.md as the long description).
BUILD_FILES = ("pyproject.toml", "README.md")
BUILD_TREE = "src"

# The container's command. A shell only to expand the environment, then `exec`: `movr serve` (granian's
# master) replaces it as PID 1, receives the orchestrator's SIGTERM itself and stops its workers. MOVR_HOST
# exists so that this exact line can run outside a container on the loopback interface (the tests do); in a
# container it stays 0.0.0.0.
SERVE_SCRIPT = (
    'exec movr serve --host "${MOVR_HOST:-0.0.0.0}" --port "${PORT:-' + str(APP_PORT) + '}" '
    '--workers "${MOVR_WORKERS:-2}" --access-log'
)
COMMAND = ["sh", "-c", SERVE_SCRIPT]

HEALTHCHECK = [
    "python",
    "-c",
    "import os, urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '{APP_PORT}'), timeout=2)",
]


def render_containerfile(source: str) -> str:
    """The Containerfile text; `source` says what it was rendered from (a comment for the reader)."""
    return f"""\
# syntax=docker/dockerfile:1
# The MovR web app ({DISTRIBUTION} {__version__}), rendered by `movr deploy render` from {source}.
# Build it with the repository as the context, from the repository root:
#   docker build -f DIR/Containerfile -t IMAGE .      or      podman build -f DIR/Containerfile -t IMAGE .

ARG PYTHON_VERSION={PYTHON_VERSION}

# Stage 1: the project's wheel and the wheels of all its dependencies.
FROM python:${{PYTHON_VERSION}}-slim AS builder
WORKDIR /src
COPY {" ".join(BUILD_FILES)} ./
COPY {BUILD_TREE} ./{BUILD_TREE}
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 2: those wheels installed offline into a slim image; no compiler, no source tree, no wheel files.
FROM python:${{PYTHON_VERSION}}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PORT={APP_PORT}
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \\
    pip install --no-cache-dir --no-index --find-links=/wheels {DISTRIBUTION}=={__version__} \\
    && groupadd --system --gid {APP_UID} movr \\
    && useradd --system --uid {APP_UID} --gid movr --no-create-home --home-dir /nonexistent \\
       --shell /usr/sbin/nologin movr
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER {APP_UID}:{APP_UID}
EXPOSE {APP_PORT}
# Docker runs this; Kubernetes ignores it and uses the Deployment's probes (/readyz and /healthz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \\
    CMD {json.dumps(HEALTHCHECK)}
CMD {json.dumps(COMMAND)}
"""
