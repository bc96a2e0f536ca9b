"""What a flow author is told about a broken IVR flow: the document, its links, unreachable
nodes and loops that never end (no I/O)."""

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

# ---------------------------------------------------------------- a good flow


def test_a_complete_flow_using_every_kind_of_node_has_no_problems() -> None:
    good = flow(
        "welcome",
        prompt("welcome", "menu"),
        menu(
            "menu",
            [("1", "account"), ("2", "check"), ("#", "bye")],
            no_match_next="bye",
            audio="main-menu.v2",
        ),
        collect("account", "remember", failure_next="bye", pattern=r"\d{4}", audio="account_no"),
        set_variable("remember", "cards-queue"),
        condition(
            "check",
            [
                branch("cards-queue"),
                branch("bye", operator=pb.CONDITION_OPERATOR_MATCHES, value="^plat.*$"),
            ],
            default_next="menu",
        ),
        route(
            "cards-queue",
            priority=10,
            skills=[common.SkillLevel(skill="cards", level=1)],
        ),
        end("bye"),
    )

    assert validate_flow(good) == []


def test_a_loop_back_to_the_menu_is_fine_when_the_menu_can_still_end() -> None:
    looping = flow(
        "menu",
        menu("menu", [("1", "repeat"), ("2", "route")]),
        prompt("repeat", "menu"),
        route("route"),
    )

    assert validate_flow(looping) == []


# ---------------------------------------------------------------- document-level rules


def test_an_empty_flow_is_refused_on_its_nodes() -> None:
    assert validate_flow(pb.Flow(name="main", entry_node="start")) == [
        FlowProblem("", "flow.nodes", "a flow needs at least one node")
    ]


def test_field_paths_start_with_the_given_prefix() -> None:
    problems = validate_flow(
        flow("start", prompt("start", "bye", text=""), end("bye"), end("island")),
        prefix="request.flow",
    )

    assert fields_of(problems) == ["request.flow.nodes[0].prompt.text", "request.flow.nodes[2]"]


def test_more_than_500_nodes_is_one_clear_problem() -> None:
    nodes = [prompt(f"n{i}", f"n{i + 1}") for i in range(500)] + [end("n500")]

    assert validate_flow(flow("n0", *nodes)) == [FlowProblem("", "flow.nodes", "at most 500 nodes")]


def test_exactly_500_nodes_is_allowed() -> None:
    nodes = [prompt(f"n{i}", f"n{i + 1}") for i in range(499)] + [end("n499")]

    assert validate_flow(flow("n0", *nodes)) == []


@pytest.mark.parametrize(
    "bad_id",
    ["", "has space", "dot.ted", "x" * 65, "中文"],
    ids=["empty", "space", "dot", "too-long", "non-ascii"],
)
def test_a_bad_node_id_is_reported_on_that_node(bad_id: str) -> None:
    problems = validate_flow(flow("start", prompt("start", "bye"), end("bye"), end(bad_id)))

    assert problems == [FlowProblem(bad_id, "flow.nodes[2].id", "must be 1-64 of A-Z a-z 0-9 _ -")]


def test_a_64_character_node_id_with_every_allowed_character_is_fine() -> None:
    long_id = ("Az09_-" * 11)[:64]

    assert validate_flow(flow(long_id, prompt(long_id, "bye"), end("bye"))) == []


def test_a_node_id_or_variable_with_a_trailing_newline_is_refused() -> None:
    problems = validate_flow(
        flow("start\n", prompt("start\n", "name"), set_variable("name", "bye", "lang\n"), end())
    )

    assert {"flow.nodes[0].id", "flow.nodes[1].set_variable.variable"} <= set(fields_of(problems))


def test_a_duplicate_node_id_is_reported_on_the_second_node() -> None:
    problems = validate_flow(flow("start", prompt("start", "bye"), end("bye"), end("bye")))

    assert problems == [FlowProblem("bye", "flow.nodes[2].id", "bye is used twice")]


@pytest.mark.parametrize("entry", ["", "nowhere"])
def test_an_entry_node_that_names_no_node_is_reported(entry: str) -> None:
    problems = validate_flow(flow(entry, prompt("start", "bye"), end("bye")))

    assert problems == [FlowProblem(entry, "flow.entry_node", "must name one of the nodes")]


def test_a_node_with_no_kind_is_reported_on_that_node() -> None:
    problems = validate_flow(flow("start", prompt("start", "bye"), pb.FlowNode(id="bye")))

    assert (
        FlowProblem(
            "bye",
            "flow.nodes[1]",
            "a node needs one of prompt, menu, collect, condition, set_variable, "
            "route_to_queue or end",
        )
        in problems
    )


# ---------------------------------------------------------------- links


EMPTY_REQUIRED_LINKS: list[tuple[str, pb.FlowNode, str]] = [
    ("prompt", prompt("start", ""), "flow.nodes[0].prompt.next"),
    ("menu choice", menu("start", [("1", "bye"), ("2", "")]), "flow.nodes[0].menu.choices[1].next"),
    ("collect", collect("start", "", failure_next="bye"), "flow.nodes[0].collect.next"),
    (
        "condition branch",
        condition("start", [branch("bye"), branch("")], default_next="bye"),
        "flow.nodes[0].condition.branches[1].next",
    ),
    (
        "condition default",
        condition("start", [branch("bye")], default_next=""),
        "flow.nodes[0].condition.default_next",
    ),
    ("set_variable", set_variable("start", ""), "flow.nodes[0].set_variable.next"),
]


@pytest.mark.parametrize(
    ("node", "field"),
    [(node, field) for _, node, field in EMPTY_REQUIRED_LINKS],
    ids=[name for name, _, _ in EMPTY_REQUIRED_LINKS],
)
def test_an_empty_required_link_is_a_missing_target(node: pb.FlowNode, field: str) -> None:
    problems = validate_flow(flow("start", node, end("bye")))

    assert FlowProblem("start", field, "missing target") in problems


def test_a_link_to_an_unknown_node_names_the_link_and_the_unknown_id() -> None:
    problems = validate_flow(
        flow("start", menu("start", [("1", "bye"), ("2", "nowhere")]), end("bye"))
    )

    assert problems == [
        FlowProblem(
            "start", "flow.nodes[0].menu.choices[1].next", "missing target: no node 'nowhere'"
        )
    ]


@pytest.mark.parametrize(
    ("node", "field"),
    [
        (menu("start", [("1", "bye")], no_match_next="ghost"), "flow.nodes[0].menu.no_match_next"),
        (collect("start", "bye", failure_next="ghost"), "flow.nodes[0].collect.failure_next"),
    ],
    ids=["menu no_match_next", "collect failure_next"],
)
def test_an_optional_link_to_an_unknown_node_is_still_reported(
    node: pb.FlowNode, field: str
) -> None:
    problems = validate_flow(flow("start", node, end("bye")))

    assert problems == [FlowProblem("start", field, "missing target: no node 'ghost'")]


def test_empty_optional_links_are_not_problems() -> None:
    problems = validate_flow(
        flow("menu", menu("menu", [("1", "ask")]), collect("ask", "bye"), end("bye"))
    )

    assert problems == []


# ---------------------------------------------------------------- unreachable and dead loops


def test_nodes_not_reachable_from_the_entry_are_reported_each_on_its_own_path() -> None:
    problems = validate_flow(
        flow(
            "start",
            prompt("start", "bye"),
            prompt("orphan", "other-orphan"),
            end("bye"),
            prompt("other-orphan", "orphan"),
        )
    )

    assert problems == [
        FlowProblem("orphan", "flow.nodes[1]", "unreachable from the entry node"),
        FlowProblem("other-orphan", "flow.nodes[3]", "unreachable from the entry node"),
    ]


def test_a_cycle_of_prompts_with_no_way_out_is_a_loop_with_no_exit() -> None:
    problems = validate_flow(flow("a", prompt("a", "b"), prompt("b", "a")))

    assert problems == [
        FlowProblem("a", "flow.nodes[0]", "loop with no exit: the flow never ends"),
        FlowProblem("b", "flow.nodes[1]", "loop with no exit: the flow never ends"),
    ]


def test_only_the_nodes_trapped_in_the_loop_are_reported() -> None:
    problems = validate_flow(
        flow(
            "menu",
            menu("menu", [("1", "trap"), ("2", "route")], no_match_next="route"),
            prompt("trap", "trap-again"),
            prompt("trap-again", "trap"),
            route("route"),
        )
    )

    assert fields_of(problems) == ["flow.nodes[1]", "flow.nodes[2]"]
    assert {p.reason for p in problems} == {"loop with no exit: the flow never ends"}


def test_a_menu_whose_every_link_leads_back_is_a_dead_loop() -> None:
    problems = validate_flow(
        flow("menu", menu("menu", [("1", "again")], no_match_next="again"), prompt("again", "menu"))
    )

    assert fields_of(problems) == ["flow.nodes[0]", "flow.nodes[1]"]


def test_a_menu_with_an_empty_no_match_link_counts_as_an_exit() -> None:
    assert (
        validate_flow(flow("menu", menu("menu", [("1", "again")]), prompt("again", "menu"))) == []
    )


def test_a_collect_with_an_empty_failure_link_counts_as_an_exit() -> None:
    assert validate_flow(flow("ask", collect("ask", "again"), prompt("again", "ask"))) == []


def test_a_condition_has_no_exit_of_its_own() -> None:
    problems = validate_flow(
        flow("check", condition("check", [branch("again")], "again"), prompt("again", "check"))
    )

    assert fields_of(problems) == ["flow.nodes[0]", "flow.nodes[1]"]
