"""The README's example as a program: a clustered inventory and a config root.

Run it twice (or in two terminals at once): the second run sees what the first one stored.

    python examples/inventory.py
"""

from __future__ import annotations

import os

import superstatic


@superstatic.clustered
class Inventory:
    def __init__(self) -> None:  # runs once per cluster, ever
        self.stock: dict[str, int] = {}
        self.moves = 0

    def add(self, sku: str, n: int) -> int:  # one serializable transaction per outside call
        self.stock[sku] = self.stock.get(sku, 0) + n
        self.moves += 1
        return self.stock[sku]

    def take(self, sku: str, n: int) -> int:
        have = self.stock.get(sku, 0)
        if have < n:
            raise ValueError(f"only {have} {sku} in stock")  # commits nothing
        self.stock[sku] = have - n
        self.moves += 1
        return self.stock[sku]


def main() -> None:
    inv = Inventory()
    print("apples after adding 3:", inv.add("apple", 3))
    try:
        inv.take("pear", 1_000)
    except ValueError as exc:
        print("refused, nothing committed:", exc)

    cfg = superstatic.root("config", dict)
    cfg["last_run_pid"] = os.getpid()

    with superstatic.transaction():  # both or neither
        inv.add("pear", 1)
        cfg["last"] = "pear"

    superstatic.sync()
    print("stock:", dict(inv.stock), "moves:", inv.moves, "config:", superstatic.plain(cfg))


if __name__ == "__main__":
    main()
