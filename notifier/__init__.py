"""The notifier: outgoing webhooks per organisation (``carewatch notifier``).

``signing`` (the signature, pure), ``retry`` (the retry schedule, pure), ``outbox`` (all of its
SQL: alert changes and escalation call-outs become deliveries; claiming and recording them),
``metrics``, ``service`` (the process: LISTEN, catch-up, delivery).
"""
