"""What a flow author is told about a bad field inside one IVR node (no I/O)."""

from __future__ import annotations

import pytest
from flow_builders import (
    branch,
    collect,
    condition,
    end,
    fields_of,
    flow,
    menu,
    prompt,
    route,
    set_variable,
)

from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.flows import FlowProblem, validate_flow
from lianluo.tenants.v1 import tenants_pb2 as pb


def _only(node: pb.FlowNode) -> pb.Flow:
    """A flow whose entry is `node`; its links, if it has any, point at the end node "bye"."""
    if node.WhichOneof("kind") == "route_to_queue":
        return flow(node.id, node)
    return flow(node.id, node, end("bye"))


NODE_CHECKS: list[tuple[str, pb.FlowNode, str]] = [
    ("blank prompt text", prompt("n", "bye", text="  "), "flow.nodes[0].prompt.text"),
    (
        "blank menu prompt",
        pb.FlowNode(
            id="n",
            menu=pb.MenuNode(prompt=" ", choices=[pb.MenuChoice(digit="1", next="bye")]),
        ),
        "flow.nodes[0].menu.prompt",
    ),
    ("menu without choices", menu("n", [], no_match_next="bye"), "flow.nodes[0].menu.choices"),
    ("empty digit", menu("n", [("", "bye")]), "flow.nodes[0].menu.choices[0].digit"),
    ("two-digit choice", menu("n", [("12", "bye")]), "flow.nodes[0].menu.choices[0].digit"),
    (
        "letter digit",
        menu("n", [("1", "bye"), ("a", "bye")]),
        "flow.nodes[0].menu.choices[1].digit",
    ),
    (
        "menu timeout over 600",
        menu("n", [("1", "bye")], timeout_seconds=601),
        "flow.nodes[0].menu.timeout_seconds",
    ),
    (
        "negative menu timeout",
        menu("n", [("1", "bye")], timeout_seconds=-1),
        "flow.nodes[0].menu.timeout_seconds",
    ),
    (
        "menu retries over 10",
        menu("n", [("1", "bye")], max_retries=11),
        "flow.nodes[0].menu.max_retries",
    ),
    ("blank collect prompt", collect("n", "bye", prompt=""), "flow.nodes[0].collect.prompt"),
    (
        "upper-case variable",
        collect("n", "bye", variable="Account"),
        "flow.nodes[0].collect.variable",
    ),
    ("empty variable", collect("n", "bye", variable=""), "flow.nodes[0].collect.variable"),
    ("variable too long", collect("n", "bye", variable="v" * 65), "flow.nodes[0].collect.variable"),
    ("bad pattern", collect("n", "bye", pattern="(unclosed"), "flow.nodes[0].collect.pattern"),
    (
        "collect timeout over 600",
        collect("n", "bye", timeout_seconds=601),
        "flow.nodes[0].collect.timeout_seconds",
    ),
    (
        "negative collect retries",
        collect("n", "bye", max_retries=-1),
        "flow.nodes[0].collect.max_retries",
    ),
    (
        "branch variable",
        condition("n", [branch("bye", variable="1st")], "bye"),
        "flow.nodes[0].condition.branches[0].variable",
    ),
    (
        "branch operator unset",
        condition(
            "n",
            [branch("bye"), branch("bye", operator=pb.CONDITION_OPERATOR_UNSPECIFIED)],
            "bye",
        ),
        "flow.nodes[0].condition.branches[1].operator",
    ),
    (
        "branch bad regex",
        condition("n", [branch("bye", operator=pb.CONDITION_OPERATOR_MATCHES, value="[")], "bye"),
        "flow.nodes[0].condition.branches[0].value",
    ),
    (
        "set_variable variable",
        set_variable("n", "bye", variable="my var"),
        "flow.nodes[0].set_variable.variable",
    ),
    ("route without queue", route("n", queue=""), "flow.nodes[0].route_to_queue.queue"),
    ("route priority 11", route("n", priority=11), "flow.nodes[0].route_to_queue.priority"),
    ("route priority -1", route("n", priority=-1), "flow.nodes[0].route_to_queue.priority"),
    (
        "route skill level 0",
        route(
            "n",
            skills=[
                common.SkillLevel(skill="cards", level=10),
                common.SkillLevel(skill="loans", level=0),
            ],
        ),
        "flow.nodes[0].route_to_queue.skills[1].level",
    ),
    (
        "prompt audio with a capital",
        pb.FlowNode(id="n", prompt=pb.PromptNode(text="Hi", next="bye", audio="Welcome")),
        "flow.nodes[0].prompt.audio",
    ),
    (
        "menu audio with a space",
        menu("n", [("1", "bye")], audio="main menu"),
        "flow.nodes[0].menu.audio",
    ),
    (
        "collect audio starting with a digit",
        collect("n", "bye", audio="1pin"),
        "flow.nodes[0].collect.audio",
    ),
]


@pytest.mark.parametrize(
    ("node", "field"),
    [(node, field) for _, node, field in NODE_CHECKS],
    ids=[name for name, _, _ in NODE_CHECKS],
)
def test_a_bad_node_field_is_the_only_problem_reported(node: pb.FlowNode, field: str) -> None:
    assert fields_of(validate_flow(_only(node))) == [field]


def test_a_digit_used_twice_names_the_second_choice() -> None:
    problems = validate_flow(_only(menu("n", [("1", "bye"), ("2", "bye"), ("1", "bye")])))

    assert problems == [FlowProblem("n", "flow.nodes[0].menu.choices[2].digit", "1 is used twice")]


OK_NODES: list[tuple[str, pb.FlowNode]] = [
    ("every digit", menu("n", [(d, "bye") for d in "0123456789*#"])),
    ("menu limits low", menu("n", [("1", "bye")], timeout_seconds=0, max_retries=0)),
    ("menu limits high", menu("n", [("1", "bye")], timeout_seconds=600, max_retries=10)),
    ("64-character variable", collect("n", "bye", variable="_" + "v" * 63)),
    ("collect limits high", collect("n", "bye", timeout_seconds=600, max_retries=10)),
    ("no pattern", collect("n", "bye", pattern="")),
    ("equals is not a regex", condition("n", [branch("bye", value="[")], "bye")),
    ("no branches", condition("n", [], "bye")),
    ("priority 0 means the queue's", route("n", priority=0)),
    ("priority 1", route("n", priority=1)),
]


@pytest.mark.parametrize("node", [n for _, n in OK_NODES], ids=[name for name, _ in OK_NODES])
def test_values_at_the_limits_are_accepted(node: pb.FlowNode) -> None:
    assert validate_flow(_only(node)) == []


def test_every_problem_of_a_flow_is_reported_at_once() -> None:
    problems = validate_flow(
        flow(
            "start",
            prompt("start", "menu", text=""),
            menu("menu", [("x", "bye"), ("2", "gone")]),
            end("bye"),
            end("bye"),
            end("island"),
        )
    )

    assert fields_of(problems) == [
        "flow.nodes[0].prompt.text",
        "flow.nodes[1].menu.choices[0].digit",
        "flow.nodes[3].id",
        "flow.nodes[1].menu.choices[1].next",
        "flow.nodes[4]",
    ]
