# One image for every Carewatch process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Mosquitto for `carewatch broker run` (Debian bookworm's 2.0.11, the version the tests run).
RUN apt-get update && apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY devices ./devices
COPY carewatch ./carewatch
COPY gateway ./gateway
COPY broker ./broker
COPY api ./api
COPY dashboards ./dashboards
COPY app ./app
COPY tools ./tools
RUN pip install --no-cache-dir . && useradd --system --uid 10001 carewatch \
    && install -d -o carewatch /var/lib/carewatch/broker
USER carewatch
ENTRYPOINT ["carewatch"]
