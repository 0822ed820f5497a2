"""The shapes of every kind of id, defined once for the gateway, the API, the pages and the CLI.

Each is the same as the database's CHECK constraint on that column (migrations 0001, 0002, 0004
and 0015), checked first in Python so that a wrong id gets a sentence rather than a constraint name.
``*_PATTERN`` is anchored, for FastAPI and pydantic (``pattern=``); ``*_RE`` is for
``fullmatch`` (``$`` alone would also match before a trailing newline); ``*_RULE`` says it in
words for error messages.
"""

from __future__ import annotations

import re
import unicodedata
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

# zigbee2mqtt's friendly name of a device, as its users write them ("Lgh 14 lås",
# "kitchen/door"): the rest of the topic after the bridge's base topic. zigbee2mqtt documents no
# length limit; 128 characters is three times the longest name we found in its issues
# ("living_room/sensor/0003/gardendoorsensor", 40) and keeps an ACL line and a dead letter's
# topic short. Migration 0015's CHECK says the same in SQL.
ZIGBEE_NAME_MAX_CHARS: Final = 128
# zigbee2mqtt's own topics under a device's: <name>/availability, <name>/set[/<property>],
# <name>/get[/<property>]. A name with such a level could not be told from them.
ZIGBEE_RESERVED_LEVELS: Final = frozenset({"availability", "set", "get"})
ZIGBEE_BRIDGE_LEVEL: Final = "bridge"  # <base>/bridge/...: zigbee2mqtt's own namespace
_ZIGBEE_DIGITS_RE: Final = re.compile(r"[0-9]+")
# Unicode categories refused: Cc control (NUL, newline: would end an ACL line), Cf format
# (zero-width and bidirectional overrides: a name that reads as another), Cs surrogates (not
# UTF-8), Zl/Zp line and paragraph separators.
_ZIGBEE_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def zigbee_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a zigbee2mqtt friendly name in Carewatch (words to follow
    "invalid zigbee_name: "), or None if it can.

    What MQTT forbids in a topic name (``+``, ``#``, NUL), what zigbee2mqtt itself refuses
    (empty, leading or trailing ``/``, control characters, ending in ``/<digits>``), and what
    would be ambiguous or dangerous here: an empty level, a ``.`` or ``..`` level (it reads as
    a path), ``bridge`` as the first level, a reserved level after the first (see
    :data:`ZIGBEE_RESERVED_LEVELS`), invisible characters, and a space at either end (Mosquitto's
    ACL file trims it, so the bridge's grant would name another topic).
    """
    if not name:
        return "empty"
    if len(name) > ZIGBEE_NAME_MAX_CHARS:
        return f"longer than {ZIGBEE_NAME_MAX_CHARS} characters"
    if "+" in name or "#" in name:
        return "+ and # are MQTT's wildcards, never part of a topic"
    if any(_invisible(char) for char in name):
        return "control, format (zero-width, direction) or line-separator characters"
    if name != name.strip():
        return "a space at the start or end (Mosquitto's ACL file would drop it)"
    levels = name.split("/")
    if "" in levels:
        return "a / at the start or end, or an empty level (//)"
    if any(level in (".", "..") for level in levels):
        return "a . or .. level looks like a path"
    if levels[0] == ZIGBEE_BRIDGE_LEVEL:
        return "'bridge' as the first level is zigbee2mqtt's own topic (zigbee2mqtt/bridge/...)"
    if reserved := sorted(ZIGBEE_RESERVED_LEVELS.intersection(levels[1:])):
        return (
            f"{reserved[0]!r} after the first level is zigbee2mqtt's own topic"
            " (<name>/availability, <name>/set, <name>/get)"
        )
    if len(levels) > 1 and _ZIGBEE_DIGITS_RE.fullmatch(levels[-1]):
        return "a last level of digits is an endpoint to zigbee2mqtt (<name>/<digits>)"
    return None


def is_zigbee_name(name: str) -> bool:
    """True if ``name`` is a friendly name Carewatch accepts (:func:`zigbee_name_problem`)."""
    return zigbee_name_problem(name) is None


def _invisible(char: str) -> bool:
    # U+FFFE, U+FFFF and U+FDD0-U+FDEF are noncharacters; zigbee2mqtt refuses them too.
    code = ord(char)
    if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFF in (0xFFFE, 0xFFFF):
        return True
    return unicodedata.category(char) in _ZIGBEE_REFUSED_CATEGORIES


# A zigbee2mqtt model id as its device definitions spell them ("SNZB-04", "TS0601_thermostat",
# "E1743"): printable ASCII without spaces, short.
ZIGBEE_MODEL_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+/()-]{0,63}")
