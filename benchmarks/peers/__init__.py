"""Peers the suite compares against: PySyncObj, Redis (primary + 2 replicas), etcd (3 members).

Each module holds the peer's cluster runner (server processes on loopback, started through a
ProcessGroup so they are stopped by PID) and its client driver (the same three operations as
superstatic's driver, run inside a client process).
"""
