"""Who may connect to the broker, and as whom.

The database is the source of truth (tables ``broker_accounts`` and ``devices``); ``sync``
renders Mosquitto's password and ACL files from it (``auth_files``, pure) and reloads the
broker. Passwords are stored only as Mosquitto's own hash (``credentials``).
"""
