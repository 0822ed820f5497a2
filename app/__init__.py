"""The top floor: the ``carewatch`` command and the web application it serves.

Nothing imports this package but ``python -m gateway`` / ``python -m api`` (the contract's
doorways) and the console script; the services below never reach up into it.
"""
