"""The node list the canonical passes rewrite, and the helpers every pass module shares."""

from __future__ import annotations

from nar_plugin.graph.vocab import NO_ATTRS, NodeAttrs

__all__ = ["DEAD", "Node", "consumers", "kill"]

DEAD = "__dead__"


class Node:
    """One node of the list the passes rewrite: op, attributes, producer ids (sorted, unique)."""

    __slots__ = ("attrs", "inputs", "op")

    def __init__(self, op: str, attrs: NodeAttrs, inputs: list[int]) -> None:
        self.op = op
        self.attrs = attrs
        self.inputs = inputs

    def __repr__(self) -> str:
        return f"Node({self.op!r}, {self.inputs})"


def consumers(nodes: list[Node]) -> list[list[int]]:
    """Consumer ids of every node (in increasing order)."""
    cons: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for p in n.inputs:
            cons[p].append(i)
    return cons


def kill(nodes: list[Node], ids: set[int] | list[int]) -> None:
    """Replace the nodes ``ids`` by dead placeholders (dropped by :func:`run_passes`)."""
    for d in ids:
        nodes[d] = Node(DEAD, NO_ATTRS, [])
