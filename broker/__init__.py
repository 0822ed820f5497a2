"""Who may connect to the broker, and as whom.

The database is the source of truth (tables ``broker_accounts`` and ``devices``); ``sync``
renders Mosquitto's password and ACL files from it (``auth_files``, pure) and reloads the
broker; ``run`` keeps Mosquitto (``mosquitto``) and that sync in one process; ``accounts``
writes the service accounts; ``commands`` is ``carewatch broker ...``. Passwords are stored
only as Mosquitto's own hash (``carewatch.broker_passwords``). Each module's SQL is its own
named constants.
"""
