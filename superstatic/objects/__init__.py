"""The object layer: proxies, shared classes, value conversion, transactions, the local replica.

Imports only `superstatic.protocol` (and itself); it never talks to the network: a `Session` is
handed a connection that satisfies `session.ConnectionLike`.
"""
