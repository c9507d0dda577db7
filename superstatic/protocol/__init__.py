"""The protocol layer: what the library and the agent must agree on, and nothing else.

`errors` (the public exception types), `codec` (CBOR with an explicit type registry), `ops` (the
operation format and its one meaning, applied by both the agent and the replicas) and `wire`
(client frames). Pure: no threads, no sockets, no wrapt. The only part of `superstatic` that the
agent imports. Imports nothing above itself.
"""
