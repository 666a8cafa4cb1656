# syntax=docker/dockerfile:1
# reconciler's container image.
#
#   docker build -t REGISTRY/reconciler:0.1.0 .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/examples/gitops/tasks-repo/manifests:/manifests:ro" REGISTRY/reconciler:0.1.0
#
# Contract with charts/reconciler (tests/helm/test_image_contract.py checks it):
# - entrypoint `reconciler` (under tini, which reaps the orphans of task processes);
#   the default command is `run`, and the chart passes all of `run`'s flags as args;
# - user and group 10001, fixed, non-root;
# - working directory /var/lib/reconciler: the state directory (SQLite lives in
#   .reconciler/state.db under it) and a volume, like /tmp;
# - the root filesystem can be read-only: HOME and the XDG cache are under /tmp and
#   Python writes no bytecode at run time;
# - the HTTP server listens on 0.0.0.0:8080 (RECONCILER_LISTEN); /healthz is the
#   health check, /readyz the readiness check;
# - git is installed (revision detection of the manifests checkout).
#
# PYTHON_IMAGE may be any Debian-based image with python3 (and venv support): `make image`
# builds on a local Debian bookworm base with python3, git and tini already in it
# (tests/services/image.py), where no registry is reachable.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# `python3`: the official images have both names, Debian's python3 package only this one.
RUN python3 -m venv /opt/reconciler
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
# Compile the bytecode now: the runtime image cannot write it (read-only root).
RUN /opt/reconciler/bin/pip install ".[postgres,mysql]" \
 && /opt/reconciler/bin/python -m compileall -q /opt/reconciler/lib

# -------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ARG UID=10001
ARG GID=10001
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="reconciler" \
      org.opencontainers.image.description="Declarative, GitOps-style scheduler for recurring tasks" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A base that has the packages already (the local Debian base of `make image`) skips apt.
RUN if ! dpkg -s git tini ca-certificates >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends git tini ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid "${GID}" reconciler \
 && useradd --uid "${UID}" --gid "${GID}" --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin reconciler \
 && install -d -o "${UID}" -g "${GID}" -m 0750 /var/lib/reconciler \
 && install -d -o "${UID}" -g "${GID}" -m 0755 /manifests

COPY --from=build /opt/reconciler /opt/reconciler

ENV PATH="/opt/reconciler/bin:${PATH}" \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECONCILER_LISTEN=0.0.0.0:8080 \
    RECONCILER_MANIFESTS=/manifests

WORKDIR /var/lib/reconciler
VOLUME ["/var/lib/reconciler", "/tmp"]
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RECONCILER_LISTEN', '0.0.0.0:8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--", "reconciler"]
CMD ["run"]
