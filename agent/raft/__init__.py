"""Pure, sans-I/O Raft: messages and ticks in; messages, entries to persist and commits out."""
