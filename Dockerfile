# One image for every Carewatch process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY carewatch ./carewatch
COPY devices ./devices
COPY gateway ./gateway
COPY api ./api
COPY dashboards ./dashboards
RUN pip install --no-cache-dir . && useradd --system --uid 10001 carewatch
USER carewatch
ENTRYPOINT ["carewatch"]
