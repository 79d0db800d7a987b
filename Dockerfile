# The segstream image: the CLI and the worker. Kafka and Redis come from their own images
# (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
# The same hash-checked lock as `make setup` and CI (it includes the dev tools: one lock, one
# tested set); the project goes on top with --no-deps so nothing else is resolved.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY segstream ./segstream
RUN pip install --no-cache-dir --no-deps .
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
