# syntax=docker/dockerfile:1.7
# Targets:
#   runtime  - the API: serving dependencies only (no torch), non-root, HEALTHCHECK on /readyz
#   trainer  - training + distillation + export (torch 2.13.0 CPU wheel)
#   runtime-gpu - the API on onnxruntime-gpu over a CUDA runtime base (KT_PROVIDERS=cuda)
# Build: docker build --target runtime -t kt-api .   |   docker build --target trainer -t kt-trainer .
#        docker build --target runtime-gpu -t kt-api-gpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31.1 (pinned in constraints.txt) is built for CUDA 13 + cuDNN 9: keep the base in line.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# /models is where artifacts live (a named volume in compose): owned by kt, so the non-root trainer can
# write it (an empty named volume takes the image's ownership on first mount).
RUN useradd --create-home --uid 10001 kt && mkdir -p /models && chown kt:kt /models
COPY pyproject.toml constraints.txt README.md ./
COPY models ./models
COPY service ./service

FROM base AS runtime
RUN pip install -c constraints.txt ".[serve]" && pip uninstall -y pip
USER kt
ENV KT_HOST=0.0.0.0 KT_PORT=8000 KT_MODEL_DIR=/models/artifact KT_ORT_THREADS=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('KT_PORT','8000'), timeout=2)" || exit 1
CMD ["python", "-m", "service"]

FROM base AS trainer
# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY training ./training
RUN pip install -c constraints.txt ".[train]"
USER kt
CMD ["python", "-m", "training.distill", "--help"]

FROM ${CUDA_IMAGE} AS runtime-gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv && useradd --create-home --uid 10001 kt \
    && mkdir -p /models && chown kt:kt /models
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY models ./models
COPY service ./service
# onnxruntime-gpu only (never together with onnxruntime): the `gpu` extra.
RUN pip install -c constraints.txt ".[gpu]"
USER kt
ENV KT_HOST=0.0.0.0 KT_PORT=8000 KT_MODEL_DIR=/models/artifact KT_ORT_THREADS=1 KT_PROVIDERS=cuda
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('KT_PORT','8000'), timeout=2)" || exit 1
CMD ["python", "-m", "service"]
