# syntax=docker/dockerfile:1
# genserve: a CPU image by default; see docs/deployment.md for the GPU build.
#
#   docker build -t genserve .                                                   # CPU
#   docker build --build-arg TORCH_INDEX=https://pypi.org/simple -t genserve:cuda .  # CUDA
#
# The PyPI torch wheel carries its own CUDA runtime, so the CUDA image only needs the host's
# NVIDIA driver and container toolkit. BASE_IMAGE may also name an Ubuntu 22.04 image such as
# nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04; Python 3.11 is then installed from apt.
ARG BASE_IMAGE=python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

# Python 3.11 at the same path in both stages, so the venv built below runs unchanged.
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/sh", "-eu", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3.11 python3.11-venv; \
        rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS builder
ARG TORCH_INDEX
ARG TORCH_VERSION
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, in their own layers: editing the source does not reinstall torch.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
# EXTRAS: optional-dependency groups of pyproject.toml to add, comma-separated (e.g. "ray").
ARG EXTRAS=""
COPY pyproject.toml ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e.strip() for e in os.environ['EXTRAS'].split(',') if e.strip()]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# The service runs from the source tree: settings read the committed artifacts in
# models/pretrained, the migrations and the static UI relative to the repository root.
COPY README.md alembic.ini ./
COPY app ./app
COPY models ./models
COPY migrations ./migrations
COPY docker ./docker
RUN pip install --no-deps -e . \
    && python -m compileall -q app models migrations \
    && chmod 0755 docker/entrypoint.sh \
    && rm -rf ./*.egg-info

FROM base AS runtime
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" genserve \
    && useradd --system --uid "${APP_UID}" --gid genserve --create-home \
        --home-dir /home/genserve --shell /usr/sbin/nologin genserve \
    && mkdir -p /var/lib/genserve \
    && chown genserve:genserve /var/lib/genserve
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
ENV PATH=/opt/venv/bin:$PATH \
    GENSERVE_HOST=0.0.0.0 \
    GENSERVE_PORT=8000 \
    GENSERVE_STATE_DIR=/var/lib/genserve \
    GENSERVE_DATA_DIR=/data
WORKDIR /app
USER ${APP_UID}:${APP_UID}
VOLUME ["/var/lib/genserve"]
EXPOSE 8000
# Liveness only (/readyz turns green once the models are loaded); python, as slim has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GENSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["genserve", "serve"]
