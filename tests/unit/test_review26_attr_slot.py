"""Review 26 of the proxies' generic attribute slot (objects/attr_slot.py): what the written
type fields point at must live as long as the classes do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from superstatic.objects import attr_slot, proxy_base
from superstatic.objects.factory import make_node
from superstatic.objects.node import node_of
from superstatic.objects.proxy_dict import DictProxy
from superstatic.objects.replica import Replica

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


class _NotPlain(dict):  # type: ignore[type-arg]
    """A container that is not the plain type: its proxy takes the hooked twin class."""


def test_reads_answer_alike_while_another_thread_swaps_the_container() -> None:
    """The swap sets the C field, then the class (proxy_base._set_wrapped): a read between the
    two sees the fast class over a non-plain container, or the twin over a plain one. Both must
    answer what either container answers. Bounded by counts, not time."""
    proxy = make_node(Replica(), "swapped", "dict", None, None).ref
    plain = {"a": 1, "b": 2}
    other = _NotPlain(plain)
    # Wrapped before any thread starts: a reader that ran before the swapper's first swap read
    # the node's empty dict (review43 saw `None == 1` once in a full run).
    proxy.__wrapped__ = plain
    swaps_max, reads_max = 20_000, 20_000
    failures: list[str] = []
    done = threading.Event()

    def swap() -> None:
        try:
            for i in range(swaps_max):
                proxy.__wrapped__ = other if i % 2 else plain
                proxy.__self_dict__.pop("get", None)  # as hollow.py forgets cached methods
                proxy.__self_dict__.pop("keys", None)
        finally:
            done.set()

    def read() -> None:
        for _ in range(reads_max):
            try:
                assert proxy.get("a") == 1 and sorted(proxy.keys()) == ["a", "b"]
                assert proxy["b"] == 2 and len(proxy) == 2 and isinstance(proxy, dict)
                assert node_of(proxy) is not None
                with pytest.raises(AttributeError, match="object has no attribute 'nope'"):
                    proxy.nope  # noqa: B018
            except BaseException as exc:  # reported below, with the thread joined
                failures.append(repr(exc))
                return
            if done.is_set():
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=swap), *(threading.Thread(target=read) for _ in range(2))]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            thread.join()
        sys.setswitchinterval(old)
    assert failures == []
    # Each swap leaves the class its container calls for.
    assert type(proxy) is _class_for(other)
    proxy.__wrapped__ = plain
    assert type(proxy) is DictProxy and proxy.get("a") == 1


def _class_for(container: object) -> type:
    if not VALIDATED or SWITCHED_OFF or type(container) is dict:
        return DictProxy
    return proxy_base._HOOKED[DictProxy]
