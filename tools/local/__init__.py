"""Private PostgreSQL instances on free loopback ports, and the broker identities that private
Mosquitto instances (``broker.mosquitto``) are given.

Used by the test fixtures, by ``carewatch demo`` (under ``./.carewatch/``) and by
``carewatch bench`` (in a temporary directory). They never touch the system's services:
each instance has its own directory, port and log file, and its context manager owns its life.
"""
