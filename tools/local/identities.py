"""Broker identities of a private installation (tests, demo, benchmarks): a gateway and the
simulator, with passwords made up for this run.

A production installation has its gateway account set by ``carewatch broker account set``
and no simulator account at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from broker.auth_files import Account, BrokerAuth, Role
from broker.mosquitto import MosquittoInstance
from carewatch.broker_passwords import hash_password, new_password

GATEWAY_USERNAME: Final = "carewatch.gateway"
SIMULATOR_USERNAME: Final = "carewatch.simulator"


@dataclass(frozen=True, slots=True)
class LocalIdentities:
    """The gateway's and the simulator's passwords of one private installation."""

    gateway_password: str = field(default_factory=new_password)
    simulator_password: str = field(default_factory=new_password)

    def accounts(self) -> list[Account]:
        """Both accounts, their passwords hashed as the broker's password file holds them."""
        return [
            Account(GATEWAY_USERNAME, Role.GATEWAY, hash_password(self.gateway_password)),
            Account(SIMULATOR_USERNAME, Role.SIMULATOR, hash_password(self.simulator_password)),
        ]

    def auth(self) -> BrokerAuth:
        """Only these two: what a broker without a database (benchmarks, most tests) knows."""
        return BrokerAuth(accounts=self.accounts())

    def gateway_url(self, broker: MosquittoInstance) -> str:
        """``broker``'s URL with the gateway's credentials."""
        return broker.url(GATEWAY_USERNAME, self.gateway_password)

    def simulator_url(self, broker: MosquittoInstance) -> str:
        """``broker``'s URL with the simulator's credentials."""
        return broker.url(SIMULATOR_USERNAME, self.simulator_password)
