"""Static checks of an IVR flow document: what makes a flow broken before it ever runs.

Both the tenants service (which stores flows) and the IVR service (ValidateFlow, and before
running one) use these checks, so a flow is judged the same way everywhere.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import re2

from lianluo.tenants.v1 import tenants_pb2

NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
VARIABLE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# A tenant's recording (AudioService), as a node or a voice channel names it.
AUDIO_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
AUDIO_NAME_RULE = "must be 1-64 of a-z 0-9 _ - ., starting with a letter"
DIGITS = set("0123456789*#")
MAX_NODES = 500
# RE2 builds an automaton within this memory; a pattern that needs more is refused when saved.
_PATTERN_MEMORY = 8 << 20


class PatternError(ValueError):
    """A tenant's pattern that RE2 cannot run (a syntax error, lookaround, a backreference)."""


@functools.lru_cache(maxsize=2048)
def tenant_pattern(pattern: str) -> Any:
    """A tenant's regular expression, compiled by RE2.

    RE2 matches in time linear in the input whatever the pattern, so a pattern such as `(a+)+$`
    cannot hold up the event loop; Python's backtracking engine takes seconds on 26 characters.
    """
    options = re2.Options()
    options.max_mem = _PATTERN_MEMORY
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"{reason} (RE2 syntax: no lookaround or backreferences)") from None


@dataclass(frozen=True)
class FlowProblem:
    """One reason a flow is broken; `field` is a path inside the Flow message."""

    node_id: str
    field: str
    reason: str


@dataclass(frozen=True)
class _Edge:
    field: str
    target: str
    required: bool


def _edges(node: tenants_pb2.FlowNode, at: str) -> list[_Edge]:
    """The node's outgoing links. An optional empty link means the flow ends there."""
    kind = node.WhichOneof("kind")
    if kind == "prompt":
        return [_Edge(f"{at}.prompt.next", node.prompt.next, True)]
    if kind == "menu":
        edges = [
            _Edge(f"{at}.menu.choices[{i}].next", c.next, True)
            for i, c in enumerate(node.menu.choices)
        ]
        return [*edges, _Edge(f"{at}.menu.no_match_next", node.menu.no_match_next, False)]
    if kind == "collect":
        return [
            _Edge(f"{at}.collect.next", node.collect.next, True),
            _Edge(f"{at}.collect.failure_next", node.collect.failure_next, False),
        ]
    if kind == "condition":
        edges = [
            _Edge(f"{at}.condition.branches[{i}].next", b.next, True)
            for i, b in enumerate(node.condition.branches)
        ]
        return [*edges, _Edge(f"{at}.condition.default_next", node.condition.default_next, True)]
    if kind == "set_variable":
        return [_Edge(f"{at}.set_variable.next", node.set_variable.next, True)]
    return []  # route_to_queue and end are terminal


def _can_end(node: tenants_pb2.FlowNode, at: str) -> bool:
    """True when the flow can finish at this node: a terminal, or an empty optional link."""
    if node.WhichOneof("kind") in {"route_to_queue", "end"}:
        return True
    return any(not e.required and not e.target for e in _edges(node, at))


def _check_node(node: tenants_pb2.FlowNode, at: str) -> list[tuple[str, str]]:
    """Problems inside one node, as (field, reason)."""
    found: list[tuple[str, str]] = []
    kind = node.WhichOneof("kind")
    if kind is None:
        return [
            (
                at,
                "a node needs one of prompt, menu, collect, condition, set_variable, "
                "route_to_queue or end",
            )
        ]
    if kind == "prompt" and not node.prompt.text.strip():
        found.append((f"{at}.prompt.text", "must not be empty"))
    if kind in ("prompt", "menu", "collect"):
        audio = getattr(node, kind).audio
        if audio and not AUDIO_NAME.fullmatch(audio):
            found.append((f"{at}.{kind}.audio", AUDIO_NAME_RULE))
    if kind == "menu":
        menu = node.menu
        if not menu.prompt.strip():
            found.append((f"{at}.menu.prompt", "must not be empty"))
        if not menu.choices:
            found.append((f"{at}.menu.choices", "a menu needs at least one choice"))
        seen: set[str] = set()
        for i, choice in enumerate(menu.choices):
            if choice.digit not in DIGITS:
                found.append((f"{at}.menu.choices[{i}].digit", "must be one of 0-9, * or #"))
            elif choice.digit in seen:
                found.append((f"{at}.menu.choices[{i}].digit", f"{choice.digit} is used twice"))
            seen.add(choice.digit)
        if not 0 <= menu.timeout_seconds <= 600:
            found.append((f"{at}.menu.timeout_seconds", "must be 0 to 600"))
        if not 0 <= menu.max_retries <= 10:
            found.append((f"{at}.menu.max_retries", "must be 0 to 10"))
    if kind == "collect":
        collect = node.collect
        if not collect.prompt.strip():
            found.append((f"{at}.collect.prompt", "must not be empty"))
        if not VARIABLE.fullmatch(collect.variable):
            found.append((f"{at}.collect.variable", "must be a lower-case identifier"))
        if collect.pattern:
            try:
                tenant_pattern(collect.pattern)
            except PatternError as error:
                found.append((f"{at}.collect.pattern", f"is not a regular expression: {error}"))
        if not 0 <= collect.timeout_seconds <= 600:
            found.append((f"{at}.collect.timeout_seconds", "must be 0 to 600"))
        if not 0 <= collect.max_retries <= 10:
            found.append((f"{at}.collect.max_retries", "must be 0 to 10"))
    if kind == "condition":
        for i, branch in enumerate(node.condition.branches):
            path = f"{at}.condition.branches[{i}]"
            if not VARIABLE.fullmatch(branch.variable):
                found.append((f"{path}.variable", "must be a lower-case identifier"))
            if branch.operator == tenants_pb2.CONDITION_OPERATOR_UNSPECIFIED:
                found.append((f"{path}.operator", "must be set"))
            if branch.operator == tenants_pb2.CONDITION_OPERATOR_MATCHES:
                try:
                    tenant_pattern(branch.value)
                except PatternError as error:
                    found.append((f"{path}.value", f"is not a regular expression: {error}"))
    if kind == "set_variable" and not VARIABLE.fullmatch(node.set_variable.variable):
        found.append((f"{at}.set_variable.variable", "must be a lower-case identifier"))
    if kind == "route_to_queue":
        route = node.route_to_queue
        if not route.queue:
            found.append((f"{at}.route_to_queue.queue", "must name a queue"))
        if route.priority and not 1 <= route.priority <= 10:
            found.append((f"{at}.route_to_queue.priority", "must be 1 to 10"))
        for i, skill in enumerate(route.skills):
            if not 1 <= skill.level <= 10:
                found.append((f"{at}.route_to_queue.skills[{i}].level", "must be 1 to 10"))
    return found


def validate_flow(flow: tenants_pb2.Flow, prefix: str = "flow") -> list[FlowProblem]:
    """Every problem of the flow: bad nodes, missing targets, unreachable nodes, dead loops."""
    problems: list[FlowProblem] = []
    if not flow.nodes:
        return [FlowProblem("", f"{prefix}.nodes", "a flow needs at least one node")]
    if len(flow.nodes) > MAX_NODES:
        return [FlowProblem("", f"{prefix}.nodes", f"at most {MAX_NODES} nodes")]
    index: dict[str, int] = {}
    for i, node in enumerate(flow.nodes):
        at = f"{prefix}.nodes[{i}]"
        if not NODE_ID.fullmatch(node.id):
            problems.append(FlowProblem(node.id, f"{at}.id", "must be 1-64 of A-Z a-z 0-9 _ -"))
        elif node.id in index:
            problems.append(FlowProblem(node.id, f"{at}.id", f"{node.id} is used twice"))
        else:
            index[node.id] = i
        problems += [FlowProblem(node.id, f, r) for f, r in _check_node(node, at)]
    if flow.entry_node not in index:
        problems.append(
            FlowProblem(flow.entry_node, f"{prefix}.entry_node", "must name one of the nodes")
        )

    graph: dict[str, list[str]] = {}
    for node_id, i in index.items():
        at = f"{prefix}.nodes[{i}]"
        graph[node_id] = []
        for edge in _edges(flow.nodes[i], at):
            if not edge.target:
                if edge.required:
                    problems.append(FlowProblem(node_id, edge.field, "missing target"))
            elif edge.target not in index:
                problems.append(
                    FlowProblem(node_id, edge.field, f"missing target: no node {edge.target!r}")
                )
            else:
                graph[node_id].append(edge.target)
    if flow.entry_node not in index:
        return problems

    reachable = _reach(flow.entry_node, graph)
    for node_id, i in index.items():
        if node_id not in reachable:
            problems.append(
                FlowProblem(node_id, f"{prefix}.nodes[{i}]", "unreachable from the entry node")
            )

    # A node from which no path ends the flow is stuck in a loop with no exit.
    reverse: dict[str, list[str]] = {n: [] for n in graph}
    for source, targets in graph.items():
        for target in targets:
            reverse[target].append(source)
    exits = [n for n, i in index.items() if _can_end(flow.nodes[i], f"{prefix}.nodes[{i}]")]
    can_finish = set().union(*(_reach(e, reverse) for e in exits)) if exits else set()
    for node_id in sorted(reachable - can_finish, key=index.__getitem__):
        i = index[node_id]
        problems.append(
            FlowProblem(node_id, f"{prefix}.nodes[{i}]", "loop with no exit: the flow never ends")
        )
    return problems


def _reach(start: str, graph: dict[str, list[str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in graph.get(queue.popleft(), []):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def queues_used(flow: tenants_pb2.Flow) -> dict[str, str]:
    """Queue names a flow routes to, each with the field path that names it."""
    return {
        node.route_to_queue.queue: f"flow.nodes[{i}].route_to_queue.queue"
        for i, node in enumerate(flow.nodes)
        if node.WhichOneof("kind") == "route_to_queue" and node.route_to_queue.queue
    }
