"""The escalation outbox (+#12): each step of the alarm response's chain taken for an alert is a
``response_escalations`` row (at most one per alert and step), announced with a ``NOTIFY`` on
:data:`CHANNEL` carrying the row's id when the transaction that took it commits.

The gateway's watchdog writes them (:mod:`gateway.response_escalation`); the services that
carry the steps out (webhooks for ``call_out``, pushes for ``notify_second_group``) listen, and
catch up by reading the rows after the last id they handled. The channel is named here, once,
for both sides.
"""

from __future__ import annotations

from typing import Final

CHANNEL: Final = "carewatch_escalations"
