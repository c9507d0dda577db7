"""The client layer: the connection to an agent (one I/O thread), the stream feeding the replica,
failover, the embedded single-node agent, one-shot requests, and the process's default session.

Imports `superstatic.objects` and `superstatic.protocol`; never the tools.
"""
