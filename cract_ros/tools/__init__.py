"""Runs of the whole node for people and CI: the demo and the soak.

- demo: `make demo`: the node on the built-in default, fed a camera, end to end
- soak: a long run of the node with its resources recorded every second (benchmarks/soak_node.py)
"""
