"""The `superstatic` command: status, inspect, members, the demo and local clusters.

The top layer below the public API: may import the client, objects and protocol layers.
"""
