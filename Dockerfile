# CPU image of twin-imaging: the inference API (default) and the command line. Torch-free: ONNX Runtime only.
#   docker build -t twin-imaging .
#   docker run --rm -p 127.0.0.1:3000:3000 -v twin-data:/data twin-imaging            # the API on port 3000
#   docker run --rm -v twin-data:/data twin-imaging twin-imaging api-key create --name pacs-router --role integration
#   docker run --rm -v "$PWD/study:/study:ro" twin-imaging twin-imaging analyze /study --out /data/out
# Inside the container the server binds 0.0.0.0 (the container's own interface); publish the port on the host's
# 127.0.0.1, or behind the hospital's TLS proxy, never on a public interface. GPU variant: Dockerfile.gpu.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TWIN_IMAGING_MODELS_DIR=/app/models \
    TWIN_IMAGING_DATA_DIR=/data \
    BENTOML_HOME=/data/bentoml \
    BENTOML_DO_NOT_TRACK=True

# EXTRAS=serve,batch for the image of Ray workers (twin-imaging batch on a KubeRay cluster)
ARG EXTRAS=serve
WORKDIR /app
COPY pyproject.toml README.md bentofile.yaml ./
COPY twin_imaging ./twin_imaging
COPY training ./training
COPY serving ./serving
COPY models ./models
RUN pip install ".[${EXTRAS}]" \
    && useradd --create-home --uid 10001 twin \
    && mkdir -p /data && chown twin:twin /data
USER twin
VOLUME /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"
CMD ["bentoml", "serve", "serving.service:TwinImaging", "--host", "0.0.0.0", "--port", "3000", "--working-dir", "/app"]
