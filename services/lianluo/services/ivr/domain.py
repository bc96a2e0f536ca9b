"""The flow engine: one step of an IVR run, as a pure function of flow, state and input.

`step(flow, state, event, caller)` runs nodes until one needs the customer (a menu or a collect)
or the flow finishes (a route or an end node). It returns what the customer is told (IvrOutput
messages, a route node's requirements among them), a transcript for simulations, and the new
state.
Nothing here does I/O, so every rule is testable without anything running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from lianluo.common.v1 import common_pb2
from lianluo.domain import hours
from lianluo.domain.flows import PatternError, tenant_pattern
from lianluo.events.v1 import ivr_pb2 as events
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.tenants.v1 import tenants_pb2 as pb

DEFAULT_TIMEOUT_SECONDS = 30
# Nodes one step may pass through before the run is judged to be looping.
MAX_NODES_PER_STEP = 100
# Longer answers are not matched at all: tenant patterns must not see unbounded input.
MAX_ANSWER_CHARS = 2000
DIGIT_CONFIDENCE = 1.0
KEYWORD_CONFIDENCE = 0.7
INTENT_VARIABLE = "intent"

NO_MATCH_TEXT = "Sorry, I did not understand that."
SILENCE_TEXT = "Sorry, I did not hear an answer."
GAVE_UP_TEXT = "Sorry, we could not understand your answer. Please contact us again. Goodbye."
BROKEN_TEXT = "Sorry, this service is not available right now. Please try again later."

Status = Literal["new", "waiting", "routed", "ended"]


@dataclass(frozen=True)
class Start:
    """The interaction entered the flow."""


@dataclass(frozen=True)
class Answer:
    """What the customer typed or said."""

    text: str


@dataclass(frozen=True)
class Timeout:
    """The customer stayed silent until the waiting prompt timed out."""


Input = Start | Answer | Timeout


@dataclass(frozen=True)
class Caller:
    """The interaction a run belongs to, as routing needs it."""

    interaction_id: str
    channel: common_pb2.Channel.ValueType = common_pb2.CHANNEL_UNSPECIFIED
    customer_id: str = ""
    customer_attributes: dict[str, str] = field(default_factory=dict)
    # BCP 47; empty leaves the queue's language.
    language: str = ""
    media: common_pb2.MediaType.ValueType = common_pb2.MEDIA_TYPE_UNSPECIFIED


@dataclass(frozen=True)
class RunState:
    """Where a run is: the node it waits at, its variables, retries left and prompts so far."""

    node_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    retries_left: int = 0
    prompt_count: int = 0
    intent_confidence: float = 0.0
    status: Status = "new"
    # How long the waiting node waits for an answer; 0 when not waiting.
    timeout_seconds: int = 0


@dataclass(frozen=True)
class Stop:
    """Why a step stopped before the flow could finish (a broken or looping flow)."""

    reason: api.StopReason.ValueType
    detail: str


@dataclass
class StepResult:
    state: RunState
    # What the customer sees, in order: prompts, then at most one routed or ended.
    outputs: list[events.IvrOutput] = field(default_factory=list)
    # Every prompt, choice, retry, variable and branch, in order (indexes left to the caller).
    transcript: list[api.SimulationStep] = field(default_factory=list)
    stop: Stop | None = None

    @property
    def routed(self) -> common_pb2.RoutingRequirements | None:
        """The requirements of the route node this step reached, if it reached one."""
        found = [o.routed.requirements for o in self.outputs if o.HasField("routed")]
        return found[-1] if found else None


class _Run:
    """Mutable working copy of one step; `step` wraps it so callers see a pure function."""

    def __init__(self, flow: pb.Flow, state: RunState, caller: Caller) -> None:
        self.flow = flow
        self.nodes = {n.id: n for n in flow.nodes}
        self.caller = caller
        self.node_id = state.node_id
        self.variables = dict(state.variables)
        self.retries_left = state.retries_left
        self.prompt_count = state.prompt_count
        self.confidence = state.intent_confidence
        self.status: Status = state.status
        self.timeout = state.timeout_seconds
        self.result = StepResult(state)

    # ------------------------------------------------------------------ recording

    def _output(self, node_id: str) -> events.IvrOutput:
        return events.IvrOutput(
            interaction_id=self.caller.interaction_id,
            flow_id=self.flow.id,
            flow_version=self.flow.version,
            node_id=node_id,
        )

    def _trace(self, step: api.SimulationStep) -> None:
        self.result.transcript.append(step)

    def say(
        self,
        node_id: str,
        text: str,
        choices: list[common_pb2.PromptChoice],
        timeout: int,
        sensitive: bool = False,
        audio: str = "",
    ) -> None:
        self.prompt_count += 1
        prompt = common_pb2.Prompt(
            id=f"{self.caller.interaction_id}-p{self.prompt_count}",
            text=text,
            choices=choices,
            expects_answer=timeout > 0,
            timeout_seconds=timeout,
            sensitive=sensitive,
            audio=audio,
        )
        output = self._output(node_id)
        output.prompt.CopyFrom(prompt)
        self.result.outputs.append(output)
        self._trace(api.SimulationStep(node_id=node_id, prompt=prompt))

    def end(self, node_id: str, text: str) -> None:
        output = self._output(node_id)
        output.ended.text = text
        self.result.outputs.append(output)
        self.status, self.node_id, self.timeout = "ended", node_id, 0

    def broken(self, node_id: str, reason: api.StopReason.ValueType, detail: str) -> None:
        self.result.stop = Stop(reason, detail)
        self.end(node_id, BROKEN_TEXT)

    def set_variable(self, node_id: str, name: str, value: str, confidence: float) -> None:
        self.variables[name] = value
        if name == INTENT_VARIABLE:
            self.confidence = confidence
        self._trace(
            api.SimulationStep(
                node_id=node_id, variable_set=api.VariableStep(variable=name, value=value)
            )
        )

    # ------------------------------------------------------------------ running

    def run_from(self, node_id: str) -> None:
        """Enter nodes from `node_id` until one waits or the flow finishes."""
        for _ in range(MAX_NODES_PER_STEP):
            if not node_id:
                # An empty optional target (no_match_next, failure_next) ends the run politely.
                self.end(self.node_id, GAVE_UP_TEXT)
                return
            node = self.nodes.get(node_id)
            if node is None:
                self.broken(self.node_id, api.STOP_REASON_MISSING_NODE, f"no node {node_id!r}")
                return
            self.node_id = node_id
            following = self.enter(node)
            if following is None:
                return
            node_id = following
        self.broken(
            self.node_id,
            api.STOP_REASON_STEP_LIMIT,
            f"passed {MAX_NODES_PER_STEP} nodes without waiting for the customer",
        )

    def enter(self, node: pb.FlowNode) -> str | None:
        """Apply one node; the next node's id, or None when the run waits or finished."""
        kind = node.WhichOneof("kind")
        if kind == "prompt":
            self.say(node.id, node.prompt.text, [], 0, audio=node.prompt.audio)
            return node.prompt.next
        if kind == "menu":
            self.retries_left = node.menu.max_retries
            self.ask(node, "")
            return None
        if kind == "collect":
            self.retries_left = node.collect.max_retries
            self.ask(node, "")
            return None
        if kind == "condition":
            index, target = choose_branch(node.condition, self.variables)
            self._trace(
                api.SimulationStep(
                    node_id=node.id, branch=api.BranchStep(branch_index=index, next=target)
                )
            )
            return target
        if kind == "set_variable":
            action = node.set_variable
            self.set_variable(node.id, action.variable, action.value, DIGIT_CONFIDENCE)
            return action.next
        if kind == "route_to_queue":
            self.route(node)
            return None
        if kind == "end":
            self.end(node.id, node.end.text)
            return None
        self.broken(node.id, api.STOP_REASON_MISSING_NODE, f"node {node.id!r} has no kind")
        return None

    def ask(self, node: pb.FlowNode, preface: str) -> None:
        """Say a menu's or collect's prompt and wait for the answer."""
        if node.HasField("menu"):
            text, seconds = node.menu.prompt, node.menu.timeout_seconds
            choices = [
                common_pb2.PromptChoice(digit=c.digit, label=c.label) for c in node.menu.choices
            ]
        else:
            text, seconds, choices = node.collect.prompt, node.collect.timeout_seconds, []
        self.timeout = seconds or DEFAULT_TIMEOUT_SECONDS
        self.status = "waiting"
        self.say(
            node.id,
            f"{preface} {text}" if preface else text,
            choices,
            self.timeout,
            sensitive=node.HasField("collect") and node.collect.sensitive,
            # A re-ask after a wrong answer has a preface the recording does not say.
            audio="" if preface else getattr(node, node.WhichOneof("kind") or "").audio,
        )

    def route(self, node: pb.FlowNode) -> None:
        route = node.route_to_queue
        # A sensitive collect's answer (a PIN, a card's security code) served the flow's
        # branches; it never leaves the IVR: not to routing, the agent, or the record.
        secret = {
            n.collect.variable
            for n in self.flow.nodes
            if n.HasField("collect") and n.collect.sensitive
        }
        requirements = common_pb2.RoutingRequirements(
            queue=route.queue,
            required_skills=route.skills,
            priority=route.priority,
            intent=self.variables.get(INTENT_VARIABLE, ""),
            intent_confidence=self.confidence if INTENT_VARIABLE in self.variables else 0.0,
            channel=self.caller.channel,
            language=self.caller.language,
            media=self.caller.media,
            # What the customer gave, not what the platform told the flow.
            collected_data={
                k: v for k, v in self.variables.items() if k != hours.VARIABLE and k not in secret
            },
            customer_id=self.caller.customer_id,
            customer_attributes=self.caller.customer_attributes,
        )
        output = self._output(node.id)
        output.routed.queue = route.queue
        output.routed.requirements.CopyFrom(requirements)
        self.result.outputs.append(output)
        self.status, self.timeout = "routed", 0

    # ------------------------------------------------------------------ answers

    def answer(self, event: Answer | Timeout) -> None:
        """Apply the customer's answer (or silence) to the node that waits for it."""
        node = self.nodes.get(self.node_id)
        if node is None or node.WhichOneof("kind") not in {"menu", "collect"}:
            self.broken(self.node_id, api.STOP_REASON_MISSING_NODE, f"no node {self.node_id!r}")
            return
        text = event.text.strip() if isinstance(event, Answer) else None
        if text is not None and len(text) > MAX_ANSWER_CHARS:
            text = ""  # never matched: see MAX_ANSWER_CHARS
        target: str | None = None
        if node.HasField("menu") and text is not None:
            target = self.choose(node, text)
        elif node.HasField("collect") and text is not None:
            target = self.collect(node, text)
        if target is not None:
            self.timeout = 0
            self.run_from(target)
        else:
            self.retry(node, SILENCE_TEXT if text is None else NO_MATCH_TEXT)

    def choose(self, node: pb.FlowNode, text: str) -> str | None:
        match = match_choice(node.menu, text)
        if match is None:
            return None
        choice, confidence = match
        picked = api.ChoiceStep(digit=choice.digit, label=choice.label, next=choice.next)
        self._trace(api.SimulationStep(node_id=node.id, choice=picked))
        if choice.label.strip():
            self.set_variable(node.id, INTENT_VARIABLE, intent_of(choice.label), confidence)
        return choice.next

    def collect(self, node: pb.FlowNode, text: str) -> str | None:
        collect = node.collect
        try:
            pattern = collect.pattern
            accepted = not pattern or tenant_pattern(pattern).fullmatch(text) is not None
        except PatternError:
            accepted = False
        if not accepted or not text:
            return None
        self.set_variable(node.id, collect.variable, text, DIGIT_CONFIDENCE)
        return collect.next

    def retry(self, node: pb.FlowNode, preface: str) -> None:
        retries = node.menu.max_retries if node.HasField("menu") else node.collect.max_retries
        if self.retries_left > 0:
            self.retries_left -= 1
            attempt = retries - self.retries_left
            again = api.NoMatchStep(attempt=attempt, next=node.id)
            self._trace(api.SimulationStep(node_id=node.id, no_match=again))
            self.ask(node, preface)
            return
        target = node.menu.no_match_next if node.HasField("menu") else node.collect.failure_next
        gave_up = api.NoMatchStep(attempt=retries + 1, gave_up=True, next=target)
        self._trace(api.SimulationStep(node_id=node.id, no_match=gave_up))
        self.timeout = 0
        self.run_from(target)

    def finish(self) -> StepResult:
        self.result.state = RunState(
            node_id=self.node_id,
            variables=self.variables,
            retries_left=self.retries_left,
            prompt_count=self.prompt_count,
            intent_confidence=self.confidence,
            status=self.status,
            timeout_seconds=self.timeout if self.status == "waiting" else 0,
        )
        return self.result


def step(flow: pb.Flow, state: RunState, event: Input, caller: Caller) -> StepResult:
    """Advance a run by one input; an input the run cannot take changes nothing."""
    run = _Run(flow, state, caller)
    if isinstance(event, Start):
        if state.status != "new":
            return StepResult(state)
        run.run_from(flow.entry_node)
    elif state.status == "waiting":
        run.answer(event)
    else:
        return StepResult(state)
    return run.finish()


def start_state(variables: dict[str, str] | None = None) -> RunState:
    """The state of a run that has not started, with variables known beforehand."""
    return replace(RunState(), variables=dict(variables or {}))


# ---------------------------------------------------------------------- matching rules


def intent_of(label: str) -> str:
    """A choice's label as an intent name: "Lost card" becomes "lost_card"."""
    return "_".join(label.lower().split())


def _mentions(text: str, phrase: str) -> bool:
    """True when `phrase` starts a word of `text` ("card" is in "my cards", not in "discard")."""
    phrase = phrase.strip().lower()
    return bool(phrase) and re.search(rf"(?<!\w){re.escape(phrase)}", text) is not None


def match_choice(menu: pb.MenuNode, text: str) -> tuple[pb.MenuChoice, float] | None:
    """The choice an answer selects, and how sure that is: a digit exactly, else a keyword."""
    answer = text.strip()
    for choice in menu.choices:
        if choice.digit and answer == choice.digit:
            return choice, DIGIT_CONFIDENCE
    lowered = answer.lower()
    for choice in menu.choices:
        if any(_mentions(lowered, k) for k in choice.keywords):
            return choice, KEYWORD_CONFIDENCE
    return None


def branch_holds(branch: pb.ConditionBranch, variables: dict[str, str]) -> bool:
    value = variables.get(branch.variable)
    op = branch.operator
    if op == pb.CONDITION_OPERATOR_EQUALS:
        return value == branch.value
    if op == pb.CONDITION_OPERATOR_NOT_EQUALS:
        return value != branch.value
    if op == pb.CONDITION_OPERATOR_MATCHES:
        try:
            return value is not None and tenant_pattern(branch.value).fullmatch(value) is not None
        except PatternError:
            return False
    if op == pb.CONDITION_OPERATOR_EXISTS:
        return bool(value)
    return False


def choose_branch(condition: pb.ConditionNode, variables: dict[str, str]) -> tuple[int, str]:
    """The first branch that holds, as (index, next); (-1, default_next) when none does."""
    for i, branch in enumerate(condition.branches):
        if branch_holds(branch, variables):
            return i, branch.next
    return -1, condition.default_next
