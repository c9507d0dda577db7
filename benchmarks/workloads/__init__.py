"""The workloads of the suite, one module each (the registry is superstatic_bench.registry)."""
