"""Review 26 of the proxies' generic attribute slot (objects/attr_slot.py): what the written
type fields point at must live as long as the classes do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from superstatic.objects import attr_slot

SWITCHED_OFF = os.environ.get(attr_slot.ENV_FAST_GETATTR, "").strip() == "0"
VALIDATED = attr_slot.layout_refusal() is None


def _run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not VALIDATED or SWITCHED_OFF, reason="the fast slot is not in use")
def test_the_c_names_outlive_attr_slots_globals() -> None:
    """`tp_name` pointed into a ctypes buffer kept in attr_slot's module globals: reloading the
    module, or interpreter shutdown clearing its globals while a proxy class is still used (a
    `__del__`), freed the buffer under the classes, and CPython's messages then read whatever
    reused that memory. In a child process: what it does to the interpreter is not undone."""
    script = """
        import ctypes, gc, importlib
        from superstatic.objects import attr_slot
        from superstatic.objects.factory import make_node
        from superstatic.objects.replica import Replica

        replica = Replica()
        refs = [make_node(replica, f"n{i}", kind, None, None).ref
                for i, kind in enumerate(("dict", "list", "set"))]
        importlib.reload(attr_slot)  # rebinds its globals
        attr_slot.__dict__.clear()  # what shutdown does to a module's globals
        gc.collect()
        # Same-size objects, to take the memory of any freed name buffer.
        junk = [ctypes.create_string_buffer(b"JUNK") for _ in range(5000)]
        for ref in refs:
            try:
                ref.nope
            except AttributeError as exc:
                print(exc)
            try:
                ref()
            except TypeError as exc:
                print(exc)
        """
    assert _run(script).splitlines() == [
        "'dict' object has no attribute 'nope'",
        "'dict' object is not callable",
        "'list' object has no attribute 'nope'",
        "'list' object is not callable",
        "'set' object has no attribute 'nope'",
        "'set' object is not callable",
    ]
