"""`lianluo customer` and `lianluo agent`: small terminal clients to hold a conversation by hand
with the platform that `lianluo run` started (its addresses are read from .state/cell.json)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.clients import StreamClient
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

R = mpb.ParticipantRole


def load_cell(state_dir: Path) -> dict[str, str]:
    path = state_dir / "cell.json"
    if not path.exists():
        raise SystemExit(f"no running platform found ({path} is missing): start `make run` first")
    found: dict[str, str] = json.loads(path.read_text())
    return found


def show(frame: mpb.ServerFrame, me: str = "") -> None:
    kind = frame.WhichOneof("frame")
    if kind == "prompt":
        choices = "".join(f"\n   [{c.digit}] {c.label}" for c in frame.prompt.choices)
        print(f"<< {frame.prompt.text}{choices}")
    elif kind == "message" and frame.message.sender_participant_id != me:
        if frame.message.sender_role != R.PARTICIPANT_ROLE_BOT:
            role = R.Name(frame.message.sender_role).removeprefix("PARTICIPANT_ROLE_").lower()
            print(f"<< {role}: {frame.message.content.text}")
    elif kind == "state_changed":
        print(f"-- {mpb.InteractionState.Name(frame.state_changed.to_state)[18:].lower()}")
    elif kind == "participant_joined" and frame.participant_joined.id != me:
        print(f"-- {frame.participant_joined.display_name or 'someone'} joined")
    elif kind == "ended":
        print(f"-- ended: {frame.ended.resolution.code}")
    elif kind == "offer":
        print(f"!! offer {frame.offer.id} for interaction {frame.offer.interaction_id[:8]}")


async def _lines() -> Any:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield line.rstrip("\n")


async def customer(cell: dict[str, str], key: str, tenant_id: str, flow: str, name: str) -> None:
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(cell["media"]) as channel:
        started = await media_rpc.MediaServiceStub(channel).StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=tenant_id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                flow=flow,
                customer=mpb.Customer(id=name, display_name=name),
            ),
            metadata=md,
        )
        me = started.customer_participant_id
        print(f"-- interaction {started.interaction.id}; type to chat, /quit to leave")
        stream = await StreamClient.connect(
            channel,
            key,
            mpb.Join(
                tenant_id=tenant_id,
                interaction_id=started.interaction.id,
                role=R.PARTICIPANT_ROLE_CUSTOMER,
                subject_id=name,
            ),
            on_frame=lambda f: show(f, me),
        )
        async for line in _lines():
            if line == "/quit" or stream.done:
                stream.leave("quit")
                break
            if line:
                stream.send_text(line, uuid.uuid4().hex)
        await asyncio.sleep(0.5)
        await stream.close()


async def agent(cell: dict[str, str], key: str, tenant_id: str, login: str) -> None:
    md = (("authorization", f"Bearer {key}"),)
    async with (
        grpc.aio.insecure_channel(cell["tenants"]) as tch,
        grpc.aio.insecure_channel(cell["media"]) as mch,
        grpc.aio.insecure_channel(cell["acd"]) as ach,
    ):
        listed = await rpc.AgentServiceStub(tch).ListAgents(
            pb.ListAgentsRequest(tenant_id=tenant_id), metadata=md
        )
        me = next((a for a in listed.agents if a.name == login), None)
        if me is None:
            raise SystemExit(f"no agent named {login!r} in this tenant")
        acd = acd_rpc.AcdServiceStub(ach)
        await acd.SetPresence(
            acd_pb2.SetPresenceRequest(
                tenant_id=tenant_id, agent_id=me.id, presence=acd_pb2.PRESENCE_AVAILABLE
            ),
            metadata=md,
        )
        offers: asyncio.Queue[acd_pb2.Offer] = asyncio.Queue()

        def on_desk(frame: mpb.ServerFrame) -> None:
            show(frame)
            if frame.WhichOneof("frame") == "offer":
                offers.put_nowait(frame.offer)

        desk = await StreamClient.connect(
            mch,
            key,
            mpb.Join(tenant_id=tenant_id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=me.id),
            on_frame=on_desk,
        )
        print(f"-- {me.display_name or me.name} is available; waiting for offers (Ctrl-C to quit)")
        lines = _lines()
        try:
            await _work(offers, lines, acd, mch, key, tenant_id, me, md)
        finally:
            await desk.close()


async def _work(
    offers: asyncio.Queue[acd_pb2.Offer],
    lines: Any,
    acd: Any,
    mch: grpc.aio.Channel,
    key: str,
    tenant_id: str,
    me: pb.Agent,
    md: Any,
) -> None:
    """Answer offers one by one, and hold each accepted conversation."""
    while True:
        offer = await offers.get()
        print("accept? [y/n] ", end="", flush=True)
        accept = (await anext(lines, "n")).strip().lower().startswith("y")
        await acd.RespondToOffer(
            acd_pb2.RespondToOfferRequest(
                tenant_id=tenant_id, offer_id=offer.id, agent_id=me.id, accept=accept
            ),
            metadata=md,
        )
        if not accept:
            continue
        await asyncio.sleep(0.5)
        talk = await StreamClient.connect(
            mch,
            key,
            mpb.Join(
                tenant_id=tenant_id,
                interaction_id=offer.interaction_id,
                role=R.PARTICIPANT_ROLE_AGENT,
                subject_id=me.id,
            ),
            on_frame=show,
        )
        print("-- connected; type to chat, /end <resolution> to close")
        async for line in lines:
            if line.startswith("/end"):
                code = line.removeprefix("/end").strip() or "resolved"
                await media_rpc.MediaServiceStub(mch).End(
                    mpb.EndRequest(
                        tenant_id=tenant_id,
                        interaction_id=offer.interaction_id,
                        resolution=mpb.Resolution(code=code),
                    ),
                    metadata=md,
                )
                break
            if line:
                talk.send_text(line, uuid.uuid4().hex)
        await talk.close()
        print("-- waiting for offers")
