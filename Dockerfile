# The segstream image: the CLI and the worker. Kafka and Redis come from their own images
# (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY segstream ./segstream
RUN pip install --no-cache-dir .
# An unprivileged user runs everything; /models and /data are its own (a bind mount keeps the
# host directory's owner: make it writable for uid 10001, or use a named volume).
RUN useradd --create-home --uid 10001 --user-group segstream \
    && mkdir -p /models /data \
    && chown segstream:segstream /models /data
USER segstream
WORKDIR /home/segstream
ENV SEGSTREAM_MODEL_DIR=/models \
    SEGSTREAM_DATA_DIR=/home/segstream/.segstream
ENTRYPOINT ["segstream"]
CMD ["worker"]
