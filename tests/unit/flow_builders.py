"""Small IVR flow documents for the flow tests: one function per kind of node."""

from __future__ import annotations

from lianluo.domain.flows import FlowProblem
from lianluo.tenants.v1 import tenants_pb2 as pb


def prompt(node_id: str, next_: str, text: str = "Welcome") -> pb.FlowNode:
    return pb.FlowNode(id=node_id, prompt=pb.PromptNode(text=text, next=next_))


def menu(
    node_id: str, choices: list[tuple[str, str]], no_match_next: str = "", **fields: object
) -> pb.FlowNode:
    return pb.FlowNode(
        id=node_id,
        menu=pb.MenuNode(
            prompt="Press 1 for cards",
            choices=[pb.MenuChoice(digit=d, label=f"option {d}", next=n) for d, n in choices],
            no_match_next=no_match_next,
            **fields,
        ),
    )


def collect(node_id: str, next_: str, failure_next: str = "", **fields: object) -> pb.FlowNode:
    values: dict[str, object] = {"prompt": "Your account number?", "variable": "account"}
    values.update(fields)
    return pb.FlowNode(
        id=node_id, collect=pb.CollectNode(next=next_, failure_next=failure_next, **values)
    )


def branch(next_: str, **fields: object) -> pb.ConditionBranch:
    values: dict[str, object] = {
        "variable": "segment",
        "operator": pb.CONDITION_OPERATOR_EQUALS,
        "value": "gold",
    }
    values.update(fields)
    return pb.ConditionBranch(next=next_, **values)


def condition(node_id: str, branches: list[pb.ConditionBranch], default_next: str) -> pb.FlowNode:
    return pb.FlowNode(
        id=node_id, condition=pb.ConditionNode(branches=branches, default_next=default_next)
    )


def set_variable(node_id: str, next_: str, variable: str = "language") -> pb.FlowNode:
    return pb.FlowNode(
        id=node_id, set_variable=pb.SetVariableNode(variable=variable, value="en", next=next_)
    )


def route(node_id: str, queue: str = "cards", **fields: object) -> pb.FlowNode:
    return pb.FlowNode(id=node_id, route_to_queue=pb.RouteToQueueNode(queue=queue, **fields))


def end(node_id: str = "bye") -> pb.FlowNode:
    return pb.FlowNode(id=node_id, end=pb.EndNode(text="Goodbye"))


def flow(entry: str, *nodes: pb.FlowNode) -> pb.Flow:
    return pb.Flow(name="main", entry_node=entry, nodes=list(nodes))


def fields_of(problems: list[FlowProblem]) -> list[str]:
    return [p.field for p in problems]
