"""Errors of the gateway.

GatewayError
├── BrokerError              the MQTT side
│   ├── ConnectRefusedError       the broker answered CONNACK with a failure reason
│   ├── SubscribeRefusedError     the broker refused one of our subscriptions
│   └── ConnectionLostError       the connection ended (peer closed, protocol error, keepalive)
├── StoreError               the database side, after the retry policy gave up (drain deadline)
└── RuleStateConflictError        a rule state was written meanwhile: evaluate again
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class BrokerError(GatewayError):
    """Something went wrong talking to the MQTT broker."""


class ConnectRefusedError(BrokerError):
    """The broker at ``endpoint`` refused the connection (CONNACK ``reason``)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"broker {endpoint} refused the connection: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class SubscribeRefusedError(BrokerError):
    """The broker refused the subscription ``topic_filter`` (SUBACK ``reason``)."""

    def __init__(self, topic_filter: str, reason: str) -> None:
        super().__init__(f"broker refused subscription {topic_filter!r}: {reason}")
        self.topic_filter = topic_filter
        self.reason = reason


class ConnectionLostError(BrokerError):
    """The MQTT connection ended; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"MQTT connection lost: {reason}")
        self.reason = reason


class StoreError(GatewayError):
    """A batch could not be stored before a deadline; it stays unacknowledged."""


class RuleStateConflictError(GatewayError):
    """Another transaction wrote the rule state of ``device_ids`` since it was loaded: roll
    back and evaluate again (gateway.rule_states)."""

    def __init__(self, device_ids: list[str]) -> None:
        shown = ", ".join(device_ids[:5]) + (" ..." if len(device_ids) > 5 else "")
        super().__init__(f"rule state written meanwhile by another transaction: {shown}")
        self.device_ids = device_ids
