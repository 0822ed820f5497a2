"""The shapes of every kind of id, defined once for the gateway, the API, the pages and the CLI.

Each is the same as the database's CHECK constraint on that column (migrations 0001, 0002 and
0004), checked first in Python so that a wrong id gets a sentence rather than a constraint name.
``*_PATTERN`` is anchored, for FastAPI and pydantic (``pattern=``); ``*_RE`` is for
``fullmatch`` (``$`` alone would also match before a trailing newline); ``*_RULE`` says it in
words for error messages.
"""

from __future__ import annotations

import re
from typing import Final

# CONTRACT.md: "device_id matches ^[a-z0-9][a-z0-9_-]{2,63}$". Unanchored, as a topic level.
DEVICE_ID_BODY: Final = r"[a-z0-9][a-z0-9_-]{2,63}"
DEVICE_ID_PATTERN: Final = f"^{DEVICE_ID_BODY}$"
DEVICE_ID_RE: Final = re.compile(DEVICE_ID_BODY)
DEVICE_ID_RULE: Final = "3-64 characters a-z 0-9 _ -, starting with a letter or digit"

# Organisations and sites share one shape.
ORG_SITE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{1,63}$"
ORG_SITE_ID_RE: Final = re.compile(ORG_SITE_ID_PATTERN[1:-1])
ORG_SITE_ID_RULE: Final = "2-64 characters a-z 0-9 _ -, starting with a letter or digit"

USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")
USERNAME_RULE: Final = "2-64 characters a-z 0-9 . _ @ -, starting with a letter or digit"

# A zigbee2mqtt bridge's id; its broker username is ``zigbee2mqtt.<id>``.
BRIDGE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
BRIDGE_ID_RE: Final = re.compile(BRIDGE_ID_PATTERN[1:-1])
BRIDGE_ID_RULE: Final = "1-63 characters a-z 0-9 _ -, starting with a letter or digit"
BRIDGE_USERNAME_PREFIX: Final = "zigbee2mqtt."

# zigbee2mqtt's friendly name of a device, as one topic level: no '/', '+', '#' or spaces.
ZIGBEE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
ZIGBEE_NAME_RULE: Final = "1-64 characters A-Z a-z 0-9 _ . : - (a topic level)"

# A zigbee2mqtt model id as its device definitions spell them ("SNZB-04", "TS0601_thermostat",
# "E1743"): printable ASCII without spaces, short.
ZIGBEE_MODEL_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+/()-]{0,63}")
