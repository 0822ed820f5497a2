"""Private PostgreSQL and Mosquitto instances on free loopback ports.

Used by the test fixtures, by ``carewatch demo`` (under ``./.carewatch/``) and by
``carewatch bench`` (in a temporary directory). They never touch the system's services:
each instance has its own directory, port and log file, and its context manager owns its life.
"""

from carewatch.local.mosquitto import MosquittoInstance
from carewatch.local.ports import free_port
from carewatch.local.postgres import PostgresInstance

__all__ = ["MosquittoInstance", "PostgresInstance", "free_port"]
