# One image for every Carewatch process; docker-compose.yml picks the command.
# Built in two stages from the lock files (scripts/lock): the wheel is built with the locked
# build tools, then installed beside exactly the locked runtime dependencies, every file checked
# against its hash. The same wheel is what tests/integration/test_wheel.py installs and runs.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements/build.lock requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY devices ./devices
COPY carewatch ./carewatch
COPY gateway ./gateway
COPY broker ./broker
COPY api ./api
COPY notifier ./notifier
COPY dashboards ./dashboards
COPY app ./app
COPY tools ./tools
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Mosquitto for `carewatch broker run` (Debian bookworm's 2.0.11, the version the tests run).
RUN apt-get update && apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/runtime.lock /tmp/runtime.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/runtime.lock && rm /tmp/runtime.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && pip check \
    && useradd --system --uid 10001 carewatch \
    && install -d -o carewatch /var/lib/carewatch/broker
USER carewatch
ENTRYPOINT ["carewatch"]
