"""The API's connection pool type: one psycopg pool per process, opened in the app lifespan."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

# Any rows: the API reads through cursors with their own row factory (dict_row), and a pool
# built with the default (tuple rows) - the app's, or a test's - fits without a cast.
Pool = psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]
