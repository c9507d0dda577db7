"""The HA-server toolkit: queues with leases, fenced locks, waiting on state, pending results
and cluster events, all built on clustered objects and transactions (docs/toolkit.md).

Every piece keeps its state in the cluster, in ordinary shared containers under roots named
`superstatic.<piece>.<name>`, and changes it with ordinary transactions: the agent knows
nothing of queues or locks. Leases and expiries are judged by log time (the leader-stamped
time each stream event carries, identical on every replica), never by a host's clock.
"""
