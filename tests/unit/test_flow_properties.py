"""Properties of flow validation over generated flows: reachability and dead-loop reports agree
with an independent walk of the graph, and a plain chain of prompts is always valid."""

from __future__ import annotations

import itertools
import random

from flow_builders import branch, collect, condition, end, flow, menu, prompt, route, set_variable
from hypothesis import given, settings
from hypothesis import strategies as st

from lianluo.domain.flows import FlowProblem, validate_flow
from lianluo.tenants.v1 import tenants_pb2 as pb

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)

KINDS = ["prompt", "menu", "collect", "condition", "set_variable", "route_to_queue", "end"]


@st.composite
def random_flows(draw: st.DrawFn) -> pb.Flow:
    """Valid-looking nodes of every kind with random links: to a node, to nothing, or nowhere."""
    count = draw(st.integers(min_value=1, max_value=12))
    ids = [f"n{i}" for i in range(count)]
    target = st.sampled_from([*ids, "", "ghost"])
    nodes = []
    for node_id in ids:
        kind = draw(st.sampled_from(KINDS))
        if kind == "prompt":
            nodes.append(prompt(node_id, draw(target)))
        elif kind == "menu":
            digits = draw(st.lists(st.sampled_from("0123456789*#"), unique=True, max_size=3))
            links = [(d, draw(target)) for d in digits]
            nodes.append(menu(node_id, links, no_match_next=draw(target)))
        elif kind == "collect":
            nodes.append(collect(node_id, draw(target), failure_next=draw(target)))
        elif kind == "condition":
            branches = [branch(draw(target)) for _ in range(draw(st.integers(0, 3)))]
            nodes.append(condition(node_id, branches, default_next=draw(target)))
        elif kind == "set_variable":
            nodes.append(set_variable(node_id, draw(target)))
        elif kind == "route_to_queue":
            nodes.append(route(node_id))
        else:
            nodes.append(end(node_id))
    return flow(draw(st.sampled_from(ids)), *nodes)


def _links(node: pb.FlowNode) -> list[tuple[str, bool]]:
    """(target, required) of each link, read straight from the message."""
    kind = node.WhichOneof("kind")
    if kind == "prompt":
        return [(node.prompt.next, True)]
    if kind == "menu":
        return [(c.next, True) for c in node.menu.choices] + [(node.menu.no_match_next, False)]
    if kind == "collect":
        return [(node.collect.next, True), (node.collect.failure_next, False)]
    if kind == "condition":
        required = [b.next for b in node.condition.branches] + [node.condition.default_next]
        return [(t, True) for t in required]
    if kind == "set_variable":
        return [(node.set_variable.next, True)]
    return []


def _walk(start: str, successors: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        here = todo.pop()
        if here not in seen:
            seen.add(here)
            todo.extend(successors[here])
    return seen


def _reported(problems: list[FlowProblem], reason_start: str) -> set[str]:
    return {p.node_id for p in problems if p.reason.startswith(reason_start)}


@PROPERTY
@given(random_flows())
def test_unreachable_and_dead_loop_reports_match_an_independent_walk(graph: pb.Flow) -> None:
    nodes = {n.id: n for n in graph.nodes}
    successors = {
        node_id: {t for t, _ in _links(node) if t in nodes} for node_id, node in nodes.items()
    }
    can_stop_here = {
        node_id
        for node_id, node in nodes.items()
        if node.WhichOneof("kind") in {"route_to_queue", "end"}
        or any(not required and not t for t, required in _links(node))
    }
    reachable = _walk(graph.entry_node, successors)

    problems = validate_flow(graph)
    unreachable = _reported(problems, "unreachable")
    dead = _reported(problems, "loop with no exit")

    assert unreachable == set(nodes) - reachable
    for node_id in reachable - dead:
        assert _walk(node_id, successors) & can_stop_here, f"{node_id} can never end the flow"
    for node_id in dead:
        assert node_id in reachable
        assert not _walk(node_id, successors) & can_stop_here, f"{node_id} can end the flow"
    index = {n.id: i for i, n in enumerate(graph.nodes)}
    for p in problems:
        if p.reason.startswith(("unreachable", "loop with no exit")):
            assert p.field == f"flow.nodes[{index[p.node_id]}]"


node_ids = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
    min_size=1,
    max_size=64,
)


@PROPERTY
@given(
    st.lists(node_ids, min_size=2, max_size=51, unique=True),
    st.text(min_size=1, max_size=40).filter(str.strip),
    st.randoms(use_true_random=False),
)
def test_a_chain_of_prompts_ending_in_an_end_node_is_always_valid(
    ids: list[str], text: str, shuffler: random.Random
) -> None:
    chain = [prompt(a, b, text=text) for a, b in itertools.pairwise(ids)]
    nodes = [*chain, end(ids[-1])]
    shuffler.shuffle(nodes)

    assert validate_flow(flow(ids[0], *nodes)) == []
