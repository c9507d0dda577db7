"""The binary operators a shared container's proxy answers (and a hollow stand-in faults on),
by dunder name: the operator function and whether the dunder is the reflected form."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

BINARY_OPERATORS: dict[str, tuple[Callable[[Any, Any], Any], bool]] = {
    "__eq__": (operator.eq, False),
    "__ne__": (operator.ne, False),
    "__lt__": (operator.lt, False),
    "__le__": (operator.le, False),
    "__gt__": (operator.gt, False),
    "__ge__": (operator.ge, False),
    "__or__": (operator.or_, False),
    "__ror__": (operator.or_, True),
    "__and__": (operator.and_, False),
    "__rand__": (operator.and_, True),
    "__sub__": (operator.sub, False),
    "__rsub__": (operator.sub, True),
    "__xor__": (operator.xor, False),
    "__rxor__": (operator.xor, True),
    "__add__": (operator.add, False),
    "__radd__": (operator.add, True),
    "__mul__": (operator.mul, False),
    "__rmul__": (operator.mul, True),
}
