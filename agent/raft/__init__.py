"""Pure, sans-I/O Raft: messages and ticks in; messages, entries to persist and commits out."""

from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Dropped,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    ProgressState,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
)

__all__ = [
    "ConfChange",
    "ConfState",
    "Dropped",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MsgType",
    "ProgressState",
    "RaftConfig",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
]
