# The segstream image: the CLI and the worker. Kafka and Redis come from their own images
# (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY segstream ./segstream
RUN pip install --no-cache-dir .
ENV SEGSTREAM_MODEL_DIR=/models
ENTRYPOINT ["segstream"]
CMD ["worker"]
