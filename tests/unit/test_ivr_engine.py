"""The IVR's flow engine: what a customer is asked, how answers are matched, and what routing
is asked for, without anything running."""

from __future__ import annotations

from lianluo.common.v1 import common_pb2 as common
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.services.ivr.domain import (
    BROKEN_TEXT,
    GAVE_UP_TEXT,
    MAX_NODES_PER_STEP,
    Answer,
    Caller,
    Input,
    RunState,
    Start,
    StepResult,
    Timeout,
    start_state,
    step,
)
from lianluo.tenants.v1 import tenants_pb2 as pb

CALLER = Caller(
    interaction_id="i-1",
    channel=common.CHANNEL_WEB,
    customer_id="cust-7",
    customer_attributes={"segment": "gold"},
    language="en",
    media=common.MEDIA_TYPE_CHAT,
)


def menu_flow(max_retries: int = 1, no_match_next: str = "bye") -> pb.Flow:
    return pb.Flow(
        id="f-1",
        name="main",
        version=3,
        entry_node="welcome",
        nodes=[
            pb.FlowNode(id="welcome", prompt=pb.PromptNode(text="Welcome.", next="menu")),
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(
                    prompt="1 for a lost card, 2 for payments.",
                    choices=[
                        pb.MenuChoice(
                            digit="1", keywords=["lost", "Stolen"], label="Lost card", next="last4"
                        ),
                        pb.MenuChoice(
                            digit="2", keywords=["payment"], label="Payments", next="bye"
                        ),
                    ],
                    timeout_seconds=5,
                    max_retries=max_retries,
                    no_match_next=no_match_next,
                ),
            ),
            pb.FlowNode(
                id="last4",
                collect=pb.CollectNode(
                    prompt="The last four digits, please.",
                    variable="card_last4",
                    pattern=r"\d{4}",
                    max_retries=1,
                    next="route",
                    failure_next="sorry",
                ),
            ),
            pb.FlowNode(
                id="route",
                route_to_queue=pb.RouteToQueueNode(
                    queue="cards",
                    priority=7,
                    skills=[common.SkillLevel(skill="cards", level=5)],
                ),
            ),
            pb.FlowNode(id="sorry", end=pb.EndNode(text="We will call you back.")),
            pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye.")),
        ],
    )


def run(flow: pb.Flow, *inputs: Input, state: RunState | None = None) -> list[StepResult]:
    """Start the flow, then apply each input; every step's result."""
    results = [step(flow, state or start_state(), Start(), CALLER)]
    for event in inputs:
        results.append(step(flow, results[-1].state, event, CALLER))
    return results


def texts(result: StepResult) -> list[str]:
    return [o.prompt.text for o in result.outputs if o.HasField("prompt")]


def test_start_says_the_welcome_and_asks_the_menu_with_its_choices() -> None:
    [first] = run(menu_flow())
    assert texts(first) == ["Welcome.", "1 for a lost card, 2 for payments."]
    welcome, menu = (o.prompt for o in first.outputs)
    assert (welcome.id, menu.id) == ("i-1-p1", "i-1-p2")
    assert not welcome.expects_answer
    assert menu.expects_answer and menu.timeout_seconds == 5
    assert [(c.digit, c.label) for c in menu.choices] == [("1", "Lost card"), ("2", "Payments")]
    assert all(o.flow_id == "f-1" and o.flow_version == 3 for o in first.outputs)
    assert first.state.status == "waiting" and first.state.node_id == "menu"


def test_a_digit_picks_the_choice_with_full_confidence() -> None:
    *_, last = run(menu_flow(), Answer(" 1 "))
    assert texts(last) == ["The last four digits, please."]
    assert last.outputs[0].prompt.id == "i-1-p3"
    assert last.state.variables["intent"] == "lost_card"
    assert last.state.intent_confidence == 1.0


def test_free_text_matches_a_keyword_case_insensitively_as_a_predicted_intent() -> None:
    *_, last = run(menu_flow(), Answer("My card was STOLEN yesterday"))
    assert last.state.node_id == "last4"
    assert last.state.variables["intent"] == "lost_card"
    assert last.state.intent_confidence == 0.7


def test_keywords_match_the_start_of_words_only() -> None:
    flow = menu_flow(max_retries=0)
    *_, last = run(flow, Answer("I have a question about repayments"))
    assert [o.ended.text for o in last.outputs if o.HasField("ended")] == ["Goodbye."]


def test_no_match_asks_again_then_goes_to_no_match_next() -> None:
    _, retry, gave_up = run(menu_flow(max_retries=1), Answer("hello?"), Answer("what"))
    assert texts(retry) == ["Sorry, I did not understand that. 1 for a lost card, 2 for payments."]
    assert retry.state.status == "waiting" and retry.state.retries_left == 0
    assert gave_up.outputs[-1].ended.text == "Goodbye."
    assert gave_up.state.status == "ended"
    attempts = [s.no_match for s in retry.transcript + gave_up.transcript if s.HasField("no_match")]
    assert [(a.attempt, a.gave_up, a.next) for a in attempts] == [
        (1, False, "menu"),
        (2, True, "bye"),
    ]


def test_timeouts_count_as_retries_and_an_empty_no_match_next_ends_politely() -> None:
    _, again, done = run(menu_flow(max_retries=1, no_match_next=""), Timeout(), Timeout())
    assert texts(again)[0].startswith("Sorry, I did not hear an answer.")
    assert [o.ended.text for o in done.outputs] == [GAVE_UP_TEXT]


def test_collect_stores_an_answer_matching_the_whole_pattern_and_routes() -> None:
    *_, bad, good = run(menu_flow(), Answer("1"), Answer("12345"), Answer("1234"))
    assert texts(bad) == ["Sorry, I did not understand that. The last four digits, please."]
    assert good.state.status == "routed"
    [routed] = good.outputs
    assert routed.routed.queue == "cards" and routed.node_id == "route"
    assert routed.interaction_id == "i-1"
    r = routed.routed.requirements
    assert good.routed == r
    assert r.queue == "cards" and r.priority == 7
    assert [(s.skill, s.level) for s in r.required_skills] == [("cards", 5)]
    assert (r.intent, r.intent_confidence) == ("lost_card", 1.0)
    assert dict(r.collected_data) == {"intent": "lost_card", "card_last4": "1234"}
    assert (r.customer_id, dict(r.customer_attributes)) == ("cust-7", {"segment": "gold"})
    assert (r.channel, r.media, r.language) == (common.CHANNEL_WEB, common.MEDIA_TYPE_CHAT, "en")


def test_collect_goes_to_failure_next_when_retries_are_used_up() -> None:
    *_, last = run(menu_flow(), Answer("lost"), Answer("no"), Answer("still no"))
    assert [o.ended.text for o in last.outputs] == ["We will call you back."]
    assert "card_last4" not in last.state.variables


def test_an_answer_when_nothing_waits_changes_nothing() -> None:
    *_, routed = run(menu_flow(), Answer("1"), Answer("1234"))
    after = step(menu_flow(), routed.state, Answer("hello"), CALLER)
    assert after.outputs == [] and after.state == routed.state
    assert step(menu_flow(), routed.state, Start(), CALLER).outputs == []


def conditional_flow() -> pb.Flow:
    def branch(variable: str, op: int, value: str, next_: str) -> pb.ConditionBranch:
        return pb.ConditionBranch(variable=variable, operator=op, value=value, next=next_)  # type: ignore[arg-type]

    return pb.Flow(
        entry_node="check",
        nodes=[
            pb.FlowNode(
                id="check",
                condition=pb.ConditionNode(
                    branches=[
                        branch("segment", pb.CONDITION_OPERATOR_EQUALS, "gold", "vip"),
                        branch("phone", pb.CONDITION_OPERATOR_MATCHES, r"\+86\d+", "china"),
                        branch("language", pb.CONDITION_OPERATOR_EXISTS, "", "known"),
                        branch("segment", pb.CONDITION_OPERATOR_NOT_EQUALS, "blocked", "tag"),
                    ],
                    default_next="blocked",
                ),
            ),
            pb.FlowNode(id="vip", end=pb.EndNode(text="vip")),
            pb.FlowNode(id="china", end=pb.EndNode(text="china")),
            pb.FlowNode(id="known", end=pb.EndNode(text="known")),
            pb.FlowNode(
                id="tag",
                set_variable=pb.SetVariableNode(variable="intent", value="general", next="to-q"),
            ),
            pb.FlowNode(id="to-q", route_to_queue=pb.RouteToQueueNode(queue="general")),
            pb.FlowNode(id="blocked", end=pb.EndNode(text="blocked")),
        ],
    )


def outcome(variables: dict[str, str]) -> str:
    [result] = run(conditional_flow(), state=start_state(variables))
    last = result.outputs[-1]
    return last.ended.text if last.HasField("ended") else f"routed:{last.routed.queue}"


def test_the_first_condition_that_holds_wins() -> None:
    assert outcome({"segment": "gold", "language": "en"}) == "vip"
    assert outcome({"phone": "+8613800000000", "language": "en"}) == "china"
    assert outcome({"phone": "+86 138", "language": "en"}) == "known"
    assert outcome({"language": ""}) == "routed:general"
    assert outcome({"segment": "blocked"}) == "blocked"


def test_set_variable_feeds_the_routing_intent_and_branches_are_transcribed() -> None:
    [result] = run(conditional_flow())
    assert result.routed is not None
    assert result.routed.intent == "general"
    assert result.routed.intent_confidence == 1.0
    branch = next(s.branch for s in result.transcript if s.HasField("branch"))
    assert (branch.branch_index, branch.next) == (3, "tag")


def test_a_route_without_an_intent_leaves_it_empty() -> None:
    flow = pb.Flow(
        entry_node="r", nodes=[pb.FlowNode(id="r", route_to_queue=pb.RouteToQueueNode(queue="q"))]
    )
    [result] = run(flow)
    r = result.routed
    assert r is not None
    assert (r.queue, r.intent, r.intent_confidence, r.priority) == ("q", "", 0.0, 0)


def test_an_end_node_ends_with_its_text() -> None:
    flow = pb.Flow(entry_node="e", nodes=[pb.FlowNode(id="e", end=pb.EndNode(text="Bye now."))])
    [result] = run(flow)
    assert [o.ended.text for o in result.outputs] == ["Bye now."]
    assert result.state.status == "ended" and result.routed is None


def test_a_runaway_loop_is_stopped_and_the_customer_told() -> None:
    flow = pb.Flow(
        entry_node="a",
        nodes=[
            pb.FlowNode(id="a", set_variable=pb.SetVariableNode(variable="x", value="1", next="b")),
            pb.FlowNode(id="b", set_variable=pb.SetVariableNode(variable="y", value="2", next="a")),
        ],
    )
    [result] = run(flow)
    assert result.stop is not None and result.stop.reason == api.STOP_REASON_STEP_LIMIT
    assert [o.ended.text for o in result.outputs] == [BROKEN_TEXT]
    assert len(result.transcript) == MAX_NODES_PER_STEP


def test_a_missing_node_ends_the_run_politely() -> None:
    flow = pb.Flow(
        entry_node="a", nodes=[pb.FlowNode(id="a", prompt=pb.PromptNode(text="Hi", next="gone"))]
    )
    [result] = run(flow)
    assert result.stop is not None and result.stop.reason == api.STOP_REASON_MISSING_NODE
    assert texts(result) == ["Hi"]
    assert result.outputs[-1].ended.text == BROKEN_TEXT


def test_a_sensitive_collect_marks_its_prompts_and_no_other() -> None:
    flow = menu_flow()
    next(n for n in flow.nodes if n.id == "last4").collect.sensitive = True
    first, asked, again = run(flow, Answer("1"), Answer("12345"))
    assert [o.prompt.sensitive for o in first.outputs] == [False, False]
    # The collect's prompt, and the same prompt asked again after a wrong answer.
    assert [o.prompt.sensitive for o in asked.outputs] == [True]
    assert [o.prompt.sensitive for o in again.outputs] == [True]


def test_a_sensitive_answer_steers_the_flow_but_never_leaves_the_ivr() -> None:
    flow = menu_flow()
    next(n for n in flow.nodes if n.id == "last4").collect.sensitive = True
    *_, routed = run(flow, Answer("1"), Answer("1234"))
    [output] = routed.outputs
    # Routed as before, but the agent, the ACD and the record never get the digits.
    assert output.routed.queue == "cards"
    assert dict(output.routed.requirements.collected_data) == {"intent": "lost_card"}


def test_a_nodes_recording_goes_with_its_prompt_but_not_with_a_re_ask() -> None:
    flow = menu_flow()
    by_id = {n.id: n for n in flow.nodes}
    by_id["welcome"].prompt.audio = "welcome"
    by_id["menu"].menu.audio = "main-menu"
    first, again = run(flow, Answer("nonsense"))
    assert [o.prompt.audio for o in first.outputs] == ["welcome", "main-menu"]
    # "Sorry, I did not understand that." comes first: the text is said, not the recording.
    assert [o.prompt.audio for o in again.outputs] == [""]
