"""Private PostgreSQL instances on free loopback ports, and the broker identities that private
Mosquitto instances (``broker.mosquitto``) are given; and the outside services the notifier
talks to, on loopback: a webhook receiver that verifies signatures (``webhook_receiver``) and a
Web Push service that checks VAPID and decrypts (``push_service``).

Used by the test fixtures, by ``carewatch demo`` (under ``./.carewatch/``) and by
``carewatch bench`` (in a temporary directory). They never touch the system's services:
each instance has its own directory, port and log file, and its context manager owns its life.
"""
