"""What the entry checks cost per request, against decoding the request alone (same run).

Run: .venv/bin/python loadtest/bench/validation.py [--rounds 20000]

Every RPC's request is decoded and then checked against its fields' limits before any service
logic (lianluo.runtime.validation). The raw limit is the protobuf decode the server does anyway;
the figure is decode plus checks. Three requests: a chat message (the hot path), a presence
change, and the demo's IVR flow (the largest a tenant usually sends). Then the check every
consumer makes of an event before its handler (its content, payload included, not its sizes),
on the chat message's event.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2
from lianluo.devstack.demo import demo_flow
from lianluo.events.v1 import envelope_pb2, interaction_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime import kafka, validation
from lianluo.tenants.v1 import tenants_pb2 as pb


def per_second(work: Callable[[], object], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        work()
    return rounds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds
    requests = {
        "Send (chat text)": mpb.SendRequest(
            tenant_id="5f0c6d1e-0000-4000-8000-000000000001",
            interaction_id="5f0c6d1e-0000-4000-8000-000000000002",
            participant_id="c-1234567890ab",
            client_message_id="m-42",
            content=mpb.MessageContent(text="My card was swallowed by the ATM on Nanjing Road."),
        ),
        "SetPresence": acd_pb2.SetPresenceRequest(
            tenant_id="5f0c6d1e-0000-4000-8000-000000000001",
            agent_id="5f0c6d1e-0000-4000-8000-000000000003",
            presence=acd_pb2.PRESENCE_AWAY,
            reason="lunch",
        ),
        "PutFlow (demo flow)": pb.PutFlowRequest(
            tenant_id="5f0c6d1e-0000-4000-8000-000000000001", flow=demo_flow()
        ),
    }
    header = ("request", "bytes", "decode/s", "decode+check/s", "ratio", "check µs")
    print("{:22} {:>6} {:>10} {:>15} {:>6} {:>9}".format(*header))
    for name, request in requests.items():
        raw, checked = measure(request.SerializeToString(), type(request).FromString, rounds)
        report(name, request.ByteSize(), raw, checked)
    chat = requests["Send (chat text)"]
    assert isinstance(chat, mpb.SendRequest)
    message = mpb.Message(
        id="5f0c6d1e-0000-4000-8000-000000000004",
        interaction_id=chat.interaction_id,
        sequence=7,
        sender_participant_id=chat.participant_id,
        sender_role=mpb.PARTICIPANT_ROLE_CUSTOMER,
        client_message_id=chat.client_message_id,
        content=chat.content,
    )
    message.send_time.GetCurrentTime()
    payload = interaction_pb2.InteractionEvent(interaction_id=chat.interaction_id, message=message)
    event = kafka.new_envelope("interaction.message", chat.tenant_id, payload, "media")
    raw, checked = measure(
        event.SerializeToString(),
        envelope_pb2.Envelope.FromString,
        rounds,
        validation.event_violations,
    )
    report("event (chat message)", event.ByteSize(), raw, checked)


def report(name: str, size: int, raw: float, checked: float) -> None:
    cost_us = (1 / checked - 1 / raw) * 1e6
    print(
        f"{name:22} {size:>6} {raw:>10,.0f} {checked:>15,.0f} {checked / raw:>6.2f} {cost_us:>9.1f}"
    )


def measure(
    body: bytes,
    parse: Callable[[bytes], Message],
    rounds: int,
    check: Callable[[Message], object] = validation.check_request,
) -> tuple[float, float]:
    """Decodes per second, and decodes with the entry checks per second."""
    per_second(lambda: check(parse(body)), 2_000)  # warm the caches
    raw = per_second(lambda: parse(body), rounds)
    checked = per_second(lambda: check(parse(body)), rounds)
    return raw, checked


if __name__ == "__main__":
    main()
