"""What a flow author sees from ValidateFlow and SimulateFlow, computed without I/O."""

from __future__ import annotations

from test_ivr_engine import menu_flow

from lianluo.common.v1 import common_pb2 as common
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.services.ivr.simulation import simulate
from lianluo.services.ivr.validation import flow_problems, is_valid
from lianluo.tenants.v1 import tenants_pb2 as pb


def kinds(problems: list[api.FlowProblem]) -> set[tuple[str, str, int]]:
    return {(p.node_id, p.field, p.kind) for p in problems}


def test_a_good_flow_with_its_queue_is_valid() -> None:
    problems = flow_problems(menu_flow(), {"cards"})
    assert problems == [] and is_valid(problems)


def test_problems_name_the_node_the_field_and_the_kind() -> None:
    flow = menu_flow()
    flow.nodes[1].menu.choices[1].next = "billing"
    flow.nodes[1].menu.choices[1].digit = "1"
    flow.nodes.append(pb.FlowNode(id="orphan", end=pb.EndNode(text="never said")))
    problems = flow_problems(flow, set())
    assert not is_valid(problems)
    assert kinds(problems) >= {
        ("menu", "menu.choices[1].next", api.FLOW_PROBLEM_KIND_MISSING_TARGET),
        ("menu", "menu.choices[1].digit", api.FLOW_PROBLEM_KIND_AMBIGUOUS_CHOICE),
        ("route", "route_to_queue.queue", api.FLOW_PROBLEM_KIND_UNKNOWN_QUEUE),
        ("orphan", "", api.FLOW_PROBLEM_KIND_UNREACHABLE_NODE),
    }
    target = next(p for p in problems if p.kind == api.FLOW_PROBLEM_KIND_MISSING_TARGET)
    assert "node 'menu'" in target.reason and "'billing'" in target.reason


def test_flow_wide_problems_have_no_node() -> None:
    flow = menu_flow()
    flow.entry_node = "nowhere"
    flow.name = "Main Flow"
    found = kinds(flow_problems(flow, {"cards"}))
    assert ("", "entry_node", api.FLOW_PROBLEM_KIND_MISSING_ENTRY) in found
    assert ("", "name", api.FLOW_PROBLEM_KIND_INVALID_VALUE) in found


def test_missing_fields_duplicates_and_bad_patterns_are_told_apart() -> None:
    flow = menu_flow()
    flow.nodes[2].collect.pattern = "(["
    flow.nodes[0].prompt.text = " "
    flow.nodes.append(pb.FlowNode(id="bye", end=pb.EndNode(text="again")))
    found = kinds(flow_problems(flow, {"cards"}))
    assert ("last4", "collect.pattern", api.FLOW_PROBLEM_KIND_INVALID_VALUE) in found
    assert ("welcome", "prompt.text", api.FLOW_PROBLEM_KIND_MISSING_FIELD) in found
    assert ("bye", "id", api.FLOW_PROBLEM_KIND_DUPLICATE_NODE_ID) in found


def test_a_keyword_shared_by_two_choices_is_a_warning_only() -> None:
    flow = menu_flow()
    flow.nodes[1].menu.choices[1].keywords.append("LOST")
    problems = flow_problems(flow, {"cards"})
    assert is_valid(problems)
    [warning] = problems
    assert warning.severity == api.SEVERITY_WARNING
    assert warning.kind == api.FLOW_PROBLEM_KIND_AMBIGUOUS_CHOICE
    assert (warning.node_id, warning.field) == ("menu", "menu.choices[1].keywords")


def request(*inputs: api.SimulatedInput, **fields: object) -> api.SimulateFlowRequest:
    return api.SimulateFlowRequest(
        tenant_id="t",
        flow=menu_flow(),
        inputs=list(inputs),
        **fields,  # type: ignore[arg-type]
    )


def text(value: str) -> api.SimulatedInput:
    return api.SimulatedInput(text=value)


SILENCE = api.SimulatedInput(timeout=True)


def test_simulation_transcribes_prompts_choices_retries_and_the_routing() -> None:
    response = simulate(
        request(
            text("my card is lost"),
            text("12"),
            text("4321"),
            text("extra"),
            channel=common.CHANNEL_APP,
            customer_id="c-1",
            customer_attributes={"value": "high"},
        )
    )
    described = [(s.index, s.node_id, s.WhichOneof("step")) for s in response.steps]
    assert described == [
        (1, "welcome", "prompt"),
        (2, "menu", "prompt"),
        (3, "menu", "input"),
        (4, "menu", "choice"),
        (5, "menu", "variable_set"),
        (6, "last4", "prompt"),
        (7, "last4", "input"),
        (8, "last4", "no_match"),
        (9, "last4", "prompt"),
        (10, "last4", "input"),
        (11, "last4", "variable_set"),
    ]
    assert response.final_node_id == "route"
    r = response.routed.requirements
    assert (r.queue, r.intent, r.intent_confidence) == ("cards", "lost_card", 0.7)
    assert (r.channel, r.customer_id, dict(r.customer_attributes)) == (
        common.CHANNEL_APP,
        "c-1",
        {"value": "high"},
    )
    assert dict(response.variables) == {
        "intent": "lost_card",
        "card_last4": "4321",
        "business_hours": "open",
    }
    assert response.unused_inputs == 1


def test_simulation_stops_when_the_inputs_run_out() -> None:
    response = simulate(request(SILENCE))
    assert response.WhichOneof("outcome") == "stopped"
    assert response.stopped.reason == api.STOP_REASON_INPUTS_EXHAUSTED
    assert response.final_node_id == "menu"
    assert response.steps[-1].prompt.text.startswith("Sorry, I did not hear an answer.")


def test_simulation_ends_with_the_end_text_and_obeys_the_step_limit() -> None:
    ended = simulate(request(text("2")))
    assert ended.ended.text == "Goodbye." and ended.final_node_id == "bye"
    limited = simulate(request(text("2"), max_steps=2))
    assert limited.stopped.reason == api.STOP_REASON_STEP_LIMIT
    assert len(limited.steps) == 2


def test_simulation_of_a_broken_flow_stops_at_the_missing_node() -> None:
    req = request(text("1"))
    req.flow.nodes[1].menu.choices[0].next = "gone"
    response = simulate(req)
    assert response.stopped.reason == api.STOP_REASON_MISSING_NODE
    assert "gone" in response.stopped.detail


def test_a_simulation_stops_at_its_time_limit_and_says_so() -> None:
    looping = request(*[text("no such choice") for _ in range(5000)], max_steps=10_000)
    looping.flow.nodes[1].menu.no_match_next = looping.flow.nodes[1].id
    assert simulate(looping).stopped.reason == api.STOP_REASON_STEP_LIMIT
    response = simulate(looping, time_limit=0.0)
    assert response.stopped.reason == api.STOP_REASON_TIME_LIMIT
    assert "stopped after 0 s" in response.stopped.detail
    assert response.unused_inputs == 5000  # nothing after the entry ran
