"""The app side of tests/cluster/test_migrate_cluster.py, run with the previous release's
library (data model 1) to write, and with this one to read back after the agents' stores were
migrated. Only public API both releases have.

    python -m support.migrate_app write      (from the tests/ folder; SUPERSTATIC_AGENT set)
"""

from __future__ import annotations

import sys
from typing import Any

import superstatic

DICT_KEYS = 3_000
LIST_VALUES = 1_000  # several list leaves
LONG_KEY = "k" * 600  # a hashed entry key with a bucket
LONG_MEMBER = "m" * 600
DELETED = ("k5", "k17")


@superstatic.clustered(name="tests.migrate.point")
class Point:
    def __init__(self, x: int, y: Any) -> None:
        self.x = x
        self.y = y


def expected_dict() -> dict[Any, Any]:
    d: dict[Any, Any] = {f"k{i}": i for i in range(DICT_KEYS)}
    d[1.0] = "float one"  # kept as 1.0: its normal form is 1
    d[(1, "t")] = "tuple"
    d[LONG_KEY] = "long"
    for key in DELETED:
        del d[key]
    return d


def expected_list() -> list[Any]:
    return [i * 7 for i in range(LIST_VALUES)]


def expected_set() -> set[Any]:
    return {*range(100), LONG_MEMBER, (2, 3)}


def write() -> None:
    superstatic.connect()
    try:
        d = superstatic.root("d", dict)
        with superstatic.transaction():
            for key, value in expected_dict().items():
                d[key] = value
            for key in DELETED:  # written, then deleted: absent after the migration
                d[key] = "gone"
                del d[key]
        superstatic.root("l", list).extend(expected_list())
        superstatic.root("s", set).update(expected_set())
        nested = superstatic.root("nested", dict)
        nested["point"] = Point(1, [1, 2, {"deep": {3}}])
        nested["again"] = nested["point"]  # one object referenced twice
    finally:
        superstatic.close()


def check() -> None:
    """Reads everything back (raises AssertionError naming what differs)."""
    d = superstatic.root("d", dict)
    got = dict(d.items())
    want = expected_dict()
    assert got == want, "dict d differs"
    assert list(got) == list(want), "dict d's order differs"
    assert [type(k) for k in got if k == 1] == [float], "the 1.0 key lost its type"
    assert list(superstatic.root("l", list)) == expected_list(), "list l differs"
    assert set(superstatic.root("s", set)) == expected_set(), "set s differs"
    nested = superstatic.root("nested", dict)
    point = nested["point"]
    assert isinstance(point, Point) and point.x == 1 and nested["again"] is point
    assert superstatic.plain(point.y) == [1, 2, {"deep": {3}}], "nested values differ"


if __name__ == "__main__":
    {"write": write}[sys.argv[1]]()
