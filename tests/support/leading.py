"""Leadership moved where a test wants it, through the public MEMBERS transfer."""

from __future__ import annotations

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.tools.localcluster import LocalCluster


def make_leader(cluster: LocalCluster, node: str, timeout_s: float) -> None:
    """`node` leads once this returns (the current leader is asked to transfer to it)."""
    leader = cluster.leader()
    if leader == node:
        return
    oneshot.request(
        cluster.agents[leader].client_endpoint,
        wire.FrameType.MEMBERS,
        {"op": "transfer", "node": node},
    )
    cluster.wait_until(lambda: cluster.leader() == node, f"{node} leads", timeout_s)
