"""The class registry: which generated shared class stands for which registered name.

One place for the three mappings the object layer consults (the generated class of a name, the
name of a generated class, and the name under which plain instances of a user class are
stored), so that conversion (`values`), identity (`node`) and class generation
(`proxy_object`) read the same tables without importing each other.
"""

from __future__ import annotations

import threading

lock = threading.Lock()
# registered name -> generated class (the user's class, shared).
BY_NAME: dict[str, type] = {}
# generated class (including placeholders for names not registered here) -> registered name.
SHARED_CLASSES: dict[type, str] = {}
# plain user class given to register() -> its registered name.
PLAIN_TO_NAME: dict[type, str] = {}
# Enum classes given to register(): class -> name, name -> class, class -> how members are
# encoded (codec.ENUM_*), and whether enum's own code may make combined members (Flags whose
# _missing_ is not overridden: looking a combination up runs no user code).
ENUM_NAMES: dict[type, str] = {}
ENUM_BY_NAME: dict[str, type] = {}
ENUM_KINDS: dict[type, int] = {}
ENUM_COMPOSABLE: dict[type, bool] = {}


def registered_name(plain_class: type) -> str | None:
    """The registered name for plain instances of `plain_class` (register()), if any."""
    return PLAIN_TO_NAME.get(plain_class)
