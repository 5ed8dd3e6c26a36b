# CPU image of twin-imaging's command line (the serving image is added with the inference API).
#   docker build -t twin-imaging .
#   docker run --rm -v "$PWD/data:/data" twin-imaging inspect /data/study
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TWIN_IMAGING_MODELS_DIR=/app/models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY twin_imaging ./twin_imaging
COPY training ./training
COPY serving ./serving
COPY models ./models
RUN pip install . \
    && useradd --create-home --uid 10001 twin
USER twin
WORKDIR /home/twin
ENTRYPOINT ["twin-imaging"]
CMD ["--help"]
