"""What ValidateFlow tells a flow author: the shared flow checks, with a kind and a severity.

lianluo.domain.flows decides what is broken (the tenants service refuses to store the same
flows); this module only sorts its findings into FlowProblemKind values, and adds the checks
that need the tenant's queues or that are warnings. Pure: the queue names are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from lianluo.domain.flows import FlowProblem, validate_flow
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.tenants.v1 import tenants_pb2 as pb

# The tenants service's rule for a flow's name, so "valid" here means "PutFlow accepts it".
FLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NODE_PATH = re.compile(r"^flow\.nodes\[\d+\]\.?")
_MISSING_FIELD_REASONS = (
    "must not be empty",
    "must be set",
    "must name a queue",
    "needs at least one",
    "a node needs one of",
)


def _kind(problem: FlowProblem) -> api.FlowProblemKind.ValueType:
    """The kind of a shared check's finding, recognised by where and what it reports."""
    reason, path = problem.reason, problem.field
    if path == "flow.entry_node":
        return api.FLOW_PROBLEM_KIND_MISSING_ENTRY
    if "used twice" in reason:
        if path.endswith(".id"):
            return api.FLOW_PROBLEM_KIND_DUPLICATE_NODE_ID
        return api.FLOW_PROBLEM_KIND_AMBIGUOUS_CHOICE
    if reason.startswith("missing target"):
        return api.FLOW_PROBLEM_KIND_MISSING_TARGET
    if reason.startswith("unreachable"):
        return api.FLOW_PROBLEM_KIND_UNREACHABLE_NODE
    if reason.startswith("loop with no exit"):
        return api.FLOW_PROBLEM_KIND_LOOP_WITHOUT_EXIT
    if any(marker in reason for marker in _MISSING_FIELD_REASONS):
        return api.FLOW_PROBLEM_KIND_MISSING_FIELD
    return api.FLOW_PROBLEM_KIND_INVALID_VALUE


def _node_field(path: str) -> str:
    """A field path relative to its node ("menu.choices[1].next"), or to the flow."""
    if _NODE_PATH.match(path):
        return _NODE_PATH.sub("", path, count=1)
    return path.removeprefix("flow.")


def _describe(problem: FlowProblem) -> str:
    where = f"node {problem.node_id!r}" if problem.node_id else "the flow"
    field = _node_field(problem.field)
    return f"{where}: {field + ' ' if field else ''}{problem.reason}"


def _shared_keywords(flow: pb.Flow) -> list[api.FlowProblem]:
    """Keywords two choices of one menu share: the first choice always wins, silently."""
    found = []
    for node in flow.nodes:
        if not node.HasField("menu"):
            continue
        owner: dict[str, int] = {}
        for i, choice in enumerate(node.menu.choices):
            for keyword in choice.keywords:
                word = keyword.strip().lower()
                if word in owner and owner[word] != i:
                    found.append(
                        api.FlowProblem(
                            node_id=node.id,
                            field=f"menu.choices[{i}].keywords",
                            kind=api.FLOW_PROBLEM_KIND_AMBIGUOUS_CHOICE,
                            severity=api.SEVERITY_WARNING,
                            reason=(
                                f"node {node.id!r}: keyword {word!r} also selects choice "
                                f"{owner[word]}, which wins"
                            ),
                        )
                    )
                owner.setdefault(word, i)
    return found


def _unknown_queues(flow: pb.Flow, queues: Collection[str]) -> list[api.FlowProblem]:
    return [
        api.FlowProblem(
            node_id=node.id,
            field="route_to_queue.queue",
            kind=api.FLOW_PROBLEM_KIND_UNKNOWN_QUEUE,
            severity=api.SEVERITY_ERROR,
            reason=f"node {node.id!r} routes to queue {node.route_to_queue.queue!r}, "
            "which the tenant does not have",
        )
        for node in flow.nodes
        if node.HasField("route_to_queue")
        and node.route_to_queue.queue
        and node.route_to_queue.queue not in queues
    ]


def flow_problems(flow: pb.Flow, queues: Collection[str]) -> list[api.FlowProblem]:
    """Every problem of `flow` for a tenant whose queues are named `queues`."""
    problems: list[api.FlowProblem] = []
    if not FLOW_NAME.match(flow.name):
        problems.append(
            api.FlowProblem(
                field="name",
                kind=api.FLOW_PROBLEM_KIND_INVALID_VALUE
                if flow.name
                else api.FLOW_PROBLEM_KIND_MISSING_FIELD,
                severity=api.SEVERITY_ERROR,
                reason="the flow's name must be 1-63 of a-z 0-9 _ -, starting with a letter "
                "or digit",
            )
        )
    for problem in validate_flow(flow):
        node_scoped = bool(_NODE_PATH.match(problem.field))
        problems.append(
            api.FlowProblem(
                node_id=problem.node_id if node_scoped else "",
                field=_node_field(problem.field),
                kind=_kind(problem),
                severity=api.SEVERITY_ERROR,
                reason=_describe(problem),
            )
        )
    problems += _unknown_queues(flow, queues)
    problems += _shared_keywords(flow)
    return problems


def is_valid(problems: list[api.FlowProblem]) -> bool:
    return all(p.severity != api.SEVERITY_ERROR for p in problems)
