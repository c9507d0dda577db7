"""The nemesis harness (docs/reliability.md): real agents in network namespaces under seeded
faults, clients recording histories through the public API, checked for linearizability."""
