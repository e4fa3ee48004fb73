# One image for every Synkro role: the gRPC code server (default command), dagster-webserver,
# dagster-daemon, and each run container the DockerRunLauncher starts. Nothing secret is baked in:
# credentials arrive as environment variables at run time (.env / Kubernetes Secret).
#
# Targets: `production` (the default) is that image, without the demo (synkro_dagster/demo: the
# demo shop/CRM API and ERP source `./run demo` uses); `demo` is the same image plus the demo, for
# the stack test's demo API container and for trying Synkro out in Docker.
#
# Only Dockerfile features Docker's built-in BuildKit frontend has had since Engine 20.10 (no
# `# syntax=` line, no heredocs): the build needs no frontend image from a registry.

# Any Debian-based image with Python 3.11-3.13 whose `python` and `pip` come first on PATH; the
# stack test builds on a local one made from Debian packages (deploy/stacktest/build-bases.sh).
ARG BASE_IMAGE=python:3.12-slim

# Wheels for a build without the package index: `pip wheel` on the host into .wheelhouse/ and
# --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links /tmp/wheels" (docs/deploy.md). The pip
# installs below mount this stage's /wheels, so the wheels never become a layer of the image.
# Without the folder it is empty and pip uses the index.
FROM ${BASE_IMAGE} AS wheelhouse
WORKDIR /wheels
COPY .wheelhouse* /wheels/

# The project's source as the production image installs it: everything but the demo. The install
# below mounts this stage, so no source layer becomes part of the image.
FROM ${BASE_IMAGE} AS source
COPY README.md pyproject.toml synkro.py /src/
COPY synkro_dagster /src/synkro_dagster
RUN rm -rf /src/synkro_dagster/demo

FROM ${BASE_IMAGE} AS production

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Optional-dependency groups from pyproject.toml to add, comma-separated (e.g. a Kubernetes extra).
ARG SYNKRO_EXTRAS=""

WORKDIR /app

# Dependency layer: only pyproject.toml and requirements.lock are copied, so this layer is rebuilt
# when the dependencies change, not on every source edit. What is installed is pyproject's
# [project] dependencies (plus the chosen extras), each package at the exact version of
# requirements.lock: the versions `./run test` tested, so a rebuild installs the same image.
COPY pyproject.toml requirements.lock deploy/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py /tmp/build/pyproject.toml "$SYNKRO_EXTRAS" > /tmp/build/requirements.txt
# Extra pip options, e.g. the wheelhouse's (above); empty: the package index.
ARG PIP_INSTALL_OPTIONS=""
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheelhouse,source=/wheels,target=/tmp/wheels \
    pip install $PIP_INSTALL_OPTIONS -r /tmp/build/requirements.txt -c /tmp/build/requirements.lock

# The project itself (the source stage: no demo), without touching the dependencies installed
# above; `pip check` fails the build if the source now needs something the dependency layer lacks.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheelhouse,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,from=source,source=/src,target=/tmp/src,rw \
    pip install $PIP_INSTALL_OPTIONS --no-deps /tmp/src && pip check && rm -rf /tmp/build

# Migrations ship with the image; `synkro db migrate` reads them from here.
COPY supabase/migrations /app/supabase/migrations
COPY --chmod=0755 deploy/entrypoint.sh /app/deploy/entrypoint.sh
COPY deploy/daemon_health.py /app/deploy/daemon_health.py

# A fixed non-root user, uid/gid 10001 (the host's inbox folder is owned by that id). The folders
# that volumes are mounted on exist and belong to it, so a fresh Docker volume gets that owner.
RUN groupadd --gid 10001 synkro \
    && useradd --uid 10001 --gid synkro --home-dir /home/synkro --create-home synkro \
    && mkdir -p /opt/dagster/dagster_home/storage /srv/synkro/inbox /var/lib/synkro/temp \
    && chown -R synkro:synkro /opt/dagster/dagster_home /srv/synkro /var/lib/synkro
COPY deploy/dagster.yaml deploy/workspace.yaml /opt/dagster/dagster_home/

ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    SYNKRO_MIGRATIONS_DIR=/app/supabase/migrations \
    SYNKRO_INBOX_ROOT=/srv/synkro/inbox \
    SYNKRO_TEMP_DIR=/var/lib/synkro/temp

USER synkro

EXPOSE 4000
# Probes the code server (the default command). docker-compose.yml gives the webserver and the
# daemon their own checks; run containers switch it off (dagster.yaml, container_kwargs).
HEALTHCHECK --interval=30s --timeout=60s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]

ENTRYPOINT ["/app/deploy/entrypoint.sh"]
# The code server is one process serving the definitions itself (`dagster api grpc`), not
# `dagster code-server start`: that proxy runs the definitions in a child process which shuts
# itself down when the proxy's heartbeats stop reaching it for 30 s (seen in the stack test on a
# busy 2-core machine: sensors held every worker thread). The proxy then kept answering the health
# check while every call failed, and never started the child again. A code deploy restarts this
# container instead of reloading from the UI.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "synkro_dagster.definitions", "--location-name", "synkro"]

# The production image plus the demo: the whole package (the build context's) installed again over
# it, same version and dependencies, so `synkro demo` and `python -m synkro_dagster.demo.api_server`
# work here.
FROM production AS demo
ARG PIP_INSTALL_OPTIONS=""
USER root
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheelhouse,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,target=/tmp/src,rw \
    pip install $PIP_INSTALL_OPTIONS --no-deps --force-reinstall /tmp/src && pip check
USER synkro

# The default target (the last stage): the production image, as built above.
FROM production
