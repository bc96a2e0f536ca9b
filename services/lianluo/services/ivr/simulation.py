"""SimulateFlow: the live engine run over scripted inputs, written down as a transcript. Pure."""

from __future__ import annotations

import time
from collections.abc import Sequence

from lianluo.domain import hours
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.services.ivr.domain import Answer, Caller, Input, Start, Timeout, start_state, step
from lianluo.tenants.v1 import tenants_pb2 as pb

DEFAULT_MAX_STEPS = 1000
MAX_STEPS = 10_000
# The CPU a simulation may use; the worst case within MAX_STEPS measured about 0.1 s.
TIME_LIMIT_SECONDS = 2.0
SIMULATED_INTERACTION = "simulation"


class _Transcript:
    """The numbered steps, cut off at the step limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.steps: list[api.SimulationStep] = []
        self.full = False

    def add(self, steps: Sequence[api.SimulationStep]) -> None:
        for s in steps:
            if len(self.steps) >= self.limit:
                self.full = True
                return
            numbered = api.SimulationStep()
            numbered.CopyFrom(s)
            numbered.index = len(self.steps) + 1
            self.steps.append(numbered)


def _as_input(scripted: api.SimulatedInput) -> Input:
    if scripted.WhichOneof("input") == "timeout" and scripted.timeout:
        return Timeout()
    return Answer(scripted.text)


def simulate(
    request: api.SimulateFlowRequest, time_limit: float = TIME_LIMIT_SECONDS
) -> api.SimulateFlowResponse:
    """Run `request.flow` from its entry, answering each waiting prompt with the next input,
    for at most `time_limit` seconds."""
    deadline = time.monotonic() + time_limit
    flow: pb.Flow = request.flow
    caller = Caller(
        interaction_id=SIMULATED_INTERACTION,
        channel=request.channel,
        customer_id=request.customer_id,
        customer_attributes=dict(request.customer_attributes),
    )
    transcript = _Transcript(request.max_steps or DEFAULT_MAX_STEPS)
    response = api.SimulateFlowResponse()
    # Open unless the request says otherwise, to try a flow's closed path.
    known = {hours.VARIABLE: hours.OPEN, **request.variables}
    result = step(flow, start_state(known), Start(), caller)
    transcript.add(result.transcript)
    used = 0
    timed_out = False
    while result.state.status == "waiting" and not transcript.full:
        if used == len(request.inputs):
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        scripted = request.inputs[used]
        used += 1
        transcript.add(
            [api.SimulationStep(node_id=result.state.node_id, input=api.InputStep(input=scripted))]
        )
        result = step(flow, result.state, _as_input(scripted), caller)
        transcript.add(result.transcript)

    state = result.state
    response.steps.extend(transcript.steps)
    response.final_node_id = state.node_id
    response.variables.update(state.variables)
    response.unused_inputs = len(request.inputs) - used
    if timed_out:
        response.stopped.reason = api.STOP_REASON_TIME_LIMIT
        response.stopped.detail = f"stopped after {time_limit:g} s, at step {len(transcript.steps)}"
    elif transcript.full:
        response.stopped.reason = api.STOP_REASON_STEP_LIMIT
        response.stopped.detail = f"stopped after {transcript.limit} steps"
    elif result.stop is not None:
        response.stopped.reason = result.stop.reason
        response.stopped.detail = result.stop.detail
    elif state.status == "waiting":
        response.stopped.reason = api.STOP_REASON_INPUTS_EXHAUSTED
        response.stopped.detail = f"node {state.node_id!r} waits for an answer"
    elif state.status == "routed" and result.routed is not None:
        response.routed.requirements.CopyFrom(result.routed)
    else:
        ended = [o for o in result.outputs if o.HasField("ended")]
        response.ended.text = ended[-1].ended.text if ended else ""
    return response
