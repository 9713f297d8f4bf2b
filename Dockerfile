# Lexia on one GPU pod (RunPod-style): CUDA runtime, Python 3.11, PostgreSQL and Redis inside the
# container, every piece of state on the volume mounted at /workspace (bin/container-start).
# Built and run on a GPU host: docker build -t lexia . && docker run --gpus all -p 8000:8000 -v lexia:/workspace lexia
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LEXIA_ENV=production \
    LEXIA_HOST=0.0.0.0 \
    LEXIA_PORT=8000 \
    LEXIA_DOCS_ENABLED=false \
    LEXIA_DATA_DIR=/workspace/lexia \
    VENV=/opt/lexia/.venv

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3.11 python3.11-venv python3.11-dev build-essential \
       postgresql redis-server libsndfile1 curl ca-certificates tini make \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 lexia \
    && mkdir -p /opt/lexia /workspace \
    && chown lexia:lexia /opt/lexia /workspace

WORKDIR /opt/lexia
COPY --chown=lexia:lexia . .
USER 1000:1000
RUN python3.11 -m venv .venv \
    && .venv/bin/pip install -c constraints/gpu.txt -e '.[gpu]'

VOLUME ["/workspace"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/ready"]
ENTRYPOINT ["/usr/bin/tini", "--", "bin/container-start"]
