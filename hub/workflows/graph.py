"""A workflow's graph: checked whole when it is saved, then walked by the engine.

The first node is where a run starts, and every other node must be reachable from it along edges.
Edges make a directed acyclic graph: a step repeats only through a `map` node, whose sub-graph (a
graph of its own, checked the same way) runs once per item. An edge from a `condition` may carry
`when`, the branch it belongs to.

Walking it: a node becomes ready once every node with an edge into it has finished and at least one
of those edges was taken (its source completed, and chose the edge's branch if it is a condition); if
none was taken, the node is skipped, and so on down the line. A join therefore waits for all of its
branches, and a branch not taken does not block it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.workflows import (
    MAX_MAP_DEPTH,
    MAX_NODES,
    AskNode,
    CallNode,
    ConditionNode,
    Definition,
    DelayNode,
    Edge,
    HttpNode,
    MapNode,
    Node,
    NodeStatus,
    SendNode,
)

from .expressions import ExpressionError, check_expression, check_template, templates_in


class GraphError(Exception):
    """What is wrong with a definition, and where (`path`: e.g. `nodes[2]`, `nodes[1].nodes[0].text`)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


FINISHED = frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED})


@dataclass(frozen=True)
class Graph:
    nodes: Sequence[Node]
    edges: Sequence[Edge]

    @property
    def start(self) -> str:
        return self.nodes[0].id

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.id == node_id)

    def incoming(self, node_id: str) -> list[Edge]:
        return [edge for edge in self.edges if edge.to == node_id]

    def sinks(self) -> list[str]:
        sources = {edge.from_ for edge in self.edges}
        return [node.id for node in self.nodes if node.id not in sources]

    def next_steps(self, states: Mapping[str, tuple[NodeStatus, str | None, bool]]) -> tuple[list[str], list[str]]:
        """The nodes to start now and the nodes to skip now, given each started node's (status, branch,
        whether its failure lets the run go on)."""
        ready, skipped = [], []
        for node in self.nodes:
            if node.id in states:
                continue
            if node.id == self.start:
                ready.append(node.id)
                continue
            edges = self.incoming(node.id)
            sources = [states.get(edge.from_) for edge in edges]
            if any(source is None or source[0] not in FINISHED for source in sources):
                continue
            if any(_taken(edge, source) for edge, source in zip(edges, sources, strict=True)):
                ready.append(node.id)
            else:
                skipped.append(node.id)
        return ready, skipped


def _taken(edge: Edge, source: tuple[NodeStatus, str | None, bool] | None) -> bool:
    assert source is not None
    status, branch, goes_on = source
    if status == NodeStatus.SKIPPED or (status == NodeStatus.FAILED and not goes_on):
        return False
    return edge.when is None or edge.when == branch


def check(definition: Definition) -> None:
    """Raise `GraphError` for the first thing wrong: ids, edges, cycles, reachability, templates, sizes."""
    total = _check_graph(definition.nodes, definition.edges, "", depth=1)
    if total > MAX_NODES:
        raise GraphError(f"a workflow has at most {MAX_NODES} nodes (map sub-graphs included); this one has "
                         f"{total}", "nodes")
    for text in templates_in(definition.output):
        _template(text, "output")


def _check_graph(nodes: Sequence[Node], edges: Sequence[Edge], prefix: str, depth: int) -> int:
    ids: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.id in ids:
            raise GraphError(f"two nodes are named {node.id!r}", f"{prefix}nodes[{index}].id")
        ids[node.id] = index
    for index, edge in enumerate(edges):
        for end in (edge.from_, edge.to):
            if end not in ids:
                raise GraphError(f"no node {end!r}", f"{prefix}edges[{index}]")
        if edge.to == nodes[0].id:
            raise GraphError(f"{edge.to!r} is where the run starts: no edge may lead into it",
                             f"{prefix}edges[{index}]")
        source = nodes[ids[edge.from_]]
        if edge.when is not None:
            if not isinstance(source, ConditionNode):
                raise GraphError(f"`when` is for edges from a condition; {edge.from_!r} is a {source.type}",
                                 f"{prefix}edges[{index}].when")
            if edge.when not in _branches(source):
                raise GraphError(f"condition {edge.from_!r} has no branch {edge.when!r} (it has "
                                 f"{', '.join(sorted(_branches(source)))})", f"{prefix}edges[{index}].when")
    _check_acyclic(nodes, edges, ids, prefix)
    reachable = _reachable(nodes[0].id, edges)
    for node in nodes:
        if node.id not in reachable:
            raise GraphError(f"{node.id!r} cannot be reached from {nodes[0].id!r}, where the run starts",
                             f"{prefix}nodes[{ids[node.id]}]")
    total = len(nodes)
    for index, node in enumerate(nodes):
        path = f"{prefix}nodes[{index}]"
        _check_node(node, path)
        if isinstance(node, MapNode):
            if depth >= MAX_MAP_DEPTH:
                raise GraphError(f"maps nest at most {MAX_MAP_DEPTH} deep", path)
            total += _check_graph(node.nodes, node.edges, f"{path}.", depth + 1)
    return total


def _branches(node: ConditionNode) -> set[str]:
    if node.cases is not None:
        return {case.label for case in node.cases} | {node.default}
    return {"true", "false"}


def _check_acyclic(nodes: Sequence[Node], edges: Sequence[Edge], ids: dict[str, int], prefix: str) -> None:
    targets: dict[str, list[str]] = {node.id: [] for node in nodes}
    for edge in edges:
        targets[edge.from_].append(edge.to)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node_id: str, path: list[str]) -> None:
        state[node_id] = 1
        for target in targets[node_id]:
            if state.get(target) == 1:
                cycle = " → ".join([*path[path.index(target):], target])
                raise GraphError(f"a cycle: {cycle} (repeat steps with a map node)", f"{prefix}nodes[{ids[target]}]")
            if target not in state:
                visit(target, [*path, target])
        state[node_id] = 2

    for node in nodes:
        if node.id not in state:
            visit(node.id, [node.id])


def _reachable(start: str, edges: Sequence[Edge]) -> set[str]:
    seen, frontier = {start}, [start]
    while frontier:
        current = frontier.pop()
        for edge in edges:
            if edge.from_ == current and edge.to not in seen:
                seen.add(edge.to)
                frontier.append(edge.to)
    return seen


def _check_node(node: Node, path: str) -> None:
    if isinstance(node, SendNode | AskNode) and (node.to is None) == (node.conversation_id is None):
        raise GraphError("give exactly one of `to` (an agent) and `conversation_id`", path)
    if isinstance(node, ConditionNode):
        if (node.if_ is None) == (node.cases is None):
            raise GraphError("give exactly one of `if` and `cases`", path)
        for field, expression in [("if", node.if_)] + [(f"cases[{i}].when", c.when) for i, c in enumerate(
                node.cases or [])]:
            if expression is not None:
                _expression(expression, f"{path}.{field}")
    if isinstance(node, DelayNode) and (node.seconds is None) == (node.until is None):
        raise GraphError("give exactly one of `seconds` and `until`", path)
    if isinstance(node, HttpNode) and node.json_body is not None and node.text_body is not None:
        raise GraphError("give at most one of `json_body` and `text_body`", path)
    if isinstance(node, MapNode):
        _expression(node.items, f"{path}.items")
    if isinstance(node, CallNode) and node.operation.startswith(("auth.", "keys.", "admin.")):
        raise GraphError(f"{node.operation} is not available to workflows (credentials and administration)",
                         f"{path}.operation")
    for field, value in node:
        if field in ("id", "type", "retry", "timeout_seconds", "continue_on_error", "nodes", "edges", "items",
                     "if_", "cases"):
            continue
        for text in templates_in(_plain(value)):
            _template(text, f"{path}.{field}")


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def _template(text: str, path: str) -> None:
    try:
        check_template(text)
    except ExpressionError as error:
        raise GraphError(str(error), path) from None


def _expression(text: str, path: str) -> None:
    try:
        check_expression(text)
    except ExpressionError as error:
        raise GraphError(str(error), path) from None
