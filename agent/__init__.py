"""superstatic agent: Raft-replicated, LMDB-durable log of object operations."""
