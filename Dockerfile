# syntax=docker/dockerfile:1.7
#
# One Dockerfile, one image per service (folder = package = image = compose service = Deployment):
#
#   docker build --target gateway   -t avatario/gateway:0.1.0   .
#   docker build --target profile   -t avatario/profile:0.1.0   .
#   docker build --target analytics -t avatario/analytics:0.1.0 .
#   docker build --target inference -t avatario/inference:0.1.0 .        # PyTorch CUDA runtime
#   docker build --target inference-cpu -t avatario/inference:0.1.0-cpu . # CPU-only torch, laptops
#
# Every final stage: no compilers or pip caches, non-root uid/gid 10001, nothing written outside
# /tmp (so a read-only root filesystem works), ENTRYPOINT `python -m services.<name>` and CMD
# `serve`; `docker run avatario/profile:0.1.0 migrate` runs the migrations instead.
# Generated gRPC stubs are built here by scripts/gen_protos.py (grpcio-tools), never copied in.
#
# Pin the bases by digest in your registry mirror (PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:…).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Python 3.11 inside, CUDA 12.4 (driver >= 550, or >= 525 with the forward-compat package).
ARG TORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
ARG TORCH_CPU_VERSION=2.5.1
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# --------------------------------------------------------------------------------------------
# build: the lean services' virtualenv in /opt/venv. Dependencies are installed from
# pyproject.toml alone first, so editing service code does not reinstall them.
# --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Compilers live only in this stage, for any dependency without a wheel for this platform
# (not pinned: whatever the base's Debian release ships; none of it reaches a final image).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY README.md ./
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY protos protos
RUN python scripts/gen_protos.py
COPY services services
# The operator tools (the `avatario` CLI the console script points at, the dev stack,
# simulation); no service imports them.
COPY avatario_tools avatario_tools
RUN pip install . && python -m compileall -q /opt/venv/lib \
 && mkdir -p /out/tls

# --------------------------------------------------------------------------------------------
# runtime: what gateway, profile and analytics share.
# --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 avatario \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin avatario
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
WORKDIR /tmp
USER 10001:10001

FROM runtime AS gateway
LABEL org.opencontainers.image.title="avatario-gateway" \
      org.opencontainers.image.description="Avatario public gRPC API"
ENV AVATARIO_GATEWAY_HOST=0.0.0.0 AVATARIO_GATEWAY_PORT=50051 \
    AVATARIO_GATEWAY_METRICS_HOST=0.0.0.0 AVATARIO_GATEWAY_METRICS_PORT=9101
# On 0.0.0.0 the gateway starts only with public TLS (AVATARIO_GATEWAY_PUBLIC_TLS_*_FILE) or the
# explicit AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC=true. The development certificate generator
# (compose's gateway-dev-cert: `python /opt/avatario/dev_cert.py --out DIR`), and the folder its
# volume mounts on, owned by the service user so that a fresh named volume is writable.
COPY scripts/dev_cert.py /opt/avatario/dev_cert.py
COPY --from=build --chown=10001:10001 /out/tls /var/lib/avatario/tls
EXPOSE 50051 9101
ENTRYPOINT ["python", "-m", "services.gateway"]
CMD ["serve"]

FROM runtime AS profile
LABEL org.opencontainers.image.title="avatario-profile" \
      org.opencontainers.image.description="Avatario family data service"
ENV AVATARIO_PROFILE_HOST=0.0.0.0 AVATARIO_PROFILE_PORT=50052 \
    AVATARIO_PROFILE_METRICS_HOST=0.0.0.0 AVATARIO_PROFILE_METRICS_PORT=9102
EXPOSE 50052 9102
ENTRYPOINT ["python", "-m", "services.profile"]
CMD ["serve"]

FROM runtime AS analytics
LABEL org.opencontainers.image.title="avatario-analytics" \
      org.opencontainers.image.description="Avatario play data, scores, flags and reports"
ENV AVATARIO_ANALYTICS_HOST=0.0.0.0 AVATARIO_ANALYTICS_PORT=50053 \
    AVATARIO_ANALYTICS_METRICS_HOST=0.0.0.0 AVATARIO_ANALYTICS_METRICS_PORT=9103
EXPOSE 50053 9103
ENTRYPOINT ["python", "-m", "services.analytics"]
CMD ["serve"]

# --------------------------------------------------------------------------------------------
# inference (GPU): on the official PyTorch CUDA runtime image. The venv sees the image's torch
# through --system-site-packages, so `.[inference]` adds only rwkv, tokenizers, nvidia-ml-py.
# --------------------------------------------------------------------------------------------
FROM ${TORCH_IMAGE} AS build-inference
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['inference']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
COPY README.md ./
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY protos protos
RUN python scripts/gen_protos.py
COPY services services
# The project with its inference extra; every dependency is already in place from the layer above.
# hadolint ignore=DL3013
RUN pip install ".[inference]" && python -m compileall -q /opt/venv/lib

FROM ${TORCH_IMAGE} AS inference
LABEL org.opencontainers.image.title="avatario-inference" \
      org.opencontainers.image.description="Avatario RWKV inference node (CUDA)"
RUN groupadd --system --gid 10001 avatario \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin avatario \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=build-inference /opt/venv /opt/venv
# RWKV_CUDA_ON=0: the rwkv package's custom kernel would need nvcc at run time; the batched
# engine does its own matmuls. PYTORCH_CUDA_ALLOC_CONF limits fragmentation with many streams.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    RWKV_JIT_ON=1 \
    RWKV_CUDA_ON=0 \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    AVATARIO_INFERENCE_HOST=0.0.0.0 AVATARIO_INFERENCE_PORT=50054 \
    AVATARIO_INFERENCE_METRICS_HOST=0.0.0.0 AVATARIO_INFERENCE_METRICS_PORT=9104
WORKDIR /tmp
USER 10001:10001
EXPOSE 50054 9104
ENTRYPOINT ["python", "-m", "services.inference"]
CMD ["serve"]

# --------------------------------------------------------------------------------------------
# inference-cpu: the same service on python:3.11-slim with the CPU build of torch (~1 GB instead
# of ~8 GB) for hosts and laptop clusters without a GPU (compose profile `cpu`, overlay cpu-demo).
# --------------------------------------------------------------------------------------------
FROM build AS build-inference-cpu
ARG TORCH_CPU_VERSION
ARG TORCH_CPU_INDEX
RUN pip install --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_CPU_VERSION}" \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['optional-dependencies']['inference']))" > /tmp/requirements-inference.txt \
 && pip install -r /tmp/requirements-inference.txt \
 && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS inference-cpu
LABEL org.opencontainers.image.title="avatario-inference" \
      org.opencontainers.image.description="Avatario RWKV inference node (CPU only)"
RUN groupadd --system --gid 10001 avatario \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin avatario \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=build-inference-cpu /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    RWKV_JIT_ON=1 \
    RWKV_CUDA_ON=0 \
    AVATARIO_INFERENCE_HOST=0.0.0.0 AVATARIO_INFERENCE_PORT=50054 \
    AVATARIO_INFERENCE_METRICS_HOST=0.0.0.0 AVATARIO_INFERENCE_METRICS_PORT=9104 \
    AVATARIO_INFERENCE_STRATEGY="cpu fp32"
WORKDIR /tmp
USER 10001:10001
EXPOSE 50054 9104
ENTRYPOINT ["python", "-m", "services.inference"]
CMD ["serve"]
