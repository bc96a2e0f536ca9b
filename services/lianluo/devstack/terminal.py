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
from lianluo.devstack.clients import Session, StreamClient, customer_session
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc

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
            print(f"<< {role}: {said(frame.message.content)}")
    elif kind == "state_changed":
        print(f"-- {mpb.InteractionState.Name(frame.state_changed.to_state)[18:].lower()}")
    elif kind == "participant_joined" and frame.participant_joined.id != me:
        print(f"-- {frame.participant_joined.display_name or 'someone'} joined")
    elif kind == "ended":
        print(f"-- ended: {frame.ended.resolution.code}")
    elif kind == "offer":
        r = frame.offer.requirements
        known = [f"{k}={v}" for k, v in sorted(r.collected_data.items())]
        if r.customer_history:
            known.append(f"{len(r.customer_history)} earlier contacts")
        about = f" ({'; '.join(known)})" if known else ""
        print(f"!! offer {frame.offer.id} for interaction {frame.offer.interaction_id[:8]}{about}")
    elif kind == "typing" and frame.typing.participant_id != me and frame.typing.active:
        print("-- typing...")


def said(content: mpb.MessageContent) -> str:
    """A message as a terminal shows it: files and places by name, forms by their answers."""
    kind = content.WhichOneof("content")
    if kind in ("image", "file"):
        item = content.image if kind == "image" else content.file
        return f"[{kind} {item.name}, {item.size_bytes:,} bytes: {item.uri}]"
    if kind == "location":
        at = content.location
        return f"[location {at.label} {at.latitude:.5f},{at.longitude:.5f}]"
    if kind == "form":
        answers = ", ".join(f"{f.name}={f.value}" for f in content.form.fields)
        return f"[form {content.form.title or content.form.form_id}: {answers}]"
    return content.text


async def _lines() -> Any:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield line.rstrip("\n")


async def customer(cell: dict[str, str], key: str, tenant_id: str, flow: str, name: str) -> None:
    """Chat as the customer `name`, with a session token an app's backend would mint (here with
    the tenant's key), never with the key itself."""
    async with (
        grpc.aio.insecure_channel(cell["tenants"]) as tch,
        grpc.aio.insecure_channel(cell["media"]) as channel,
    ):
        token = await customer_session(tch, key, tenant_id, name, common.CHANNEL_WEB)
        started = await media_rpc.MediaServiceStub(channel).StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=tenant_id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                flow=flow,
                customer=mpb.Customer(id=name, display_name=name),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        me = started.customer_participant_id
        print(f"-- interaction {started.interaction.id}; type to chat, /quit to leave")
        stream = await StreamClient.connect(
            channel,
            token,
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


async def agent(cell: dict[str, str], tenant: str, login: str, password: str) -> None:
    """Sign in as the person `login` of the tenant named `tenant`, go available and answer
    offers as the agent they are."""
    async with (
        grpc.aio.insecure_channel(cell["tenants"]) as tch,
        grpc.aio.insecure_channel(cell["media"]) as mch,
        grpc.aio.insecure_channel(cell["acd"]) as ach,
    ):
        session = await Session.login(tch, tenant, login, password)
        if not session.user.agent_id:
            raise SystemExit(f"{login} is not an agent of {tenant}")
        tenant_id, agent_id = session.user.tenant_id, session.user.agent_id
        acd = acd_rpc.AcdServiceStub(ach)
        await acd.SetPresence(
            acd_pb2.SetPresenceRequest(
                tenant_id=tenant_id, agent_id=agent_id, presence=acd_pb2.PRESENCE_AVAILABLE
            ),
            metadata=await session.metadata(),
        )
        offers: asyncio.Queue[acd_pb2.Offer] = asyncio.Queue()

        def on_desk(frame: mpb.ServerFrame) -> None:
            show(frame)
            if frame.WhichOneof("frame") == "offer":
                offers.put_nowait(frame.offer)

        desk = await StreamClient.connect(
            mch,
            await session.token(),
            mpb.Join(tenant_id=tenant_id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=agent_id),
            on_frame=on_desk,
        )
        name = session.user.display_name or login
        print(f"-- {name} is available; waiting for offers (Ctrl-C to quit)")
        try:
            await _work(offers, _lines(), acd, mch, session)
        finally:
            await desk.close()
            await session.logout()


async def _work(
    offers: asyncio.Queue[acd_pb2.Offer],
    lines: Any,
    acd: Any,
    mch: grpc.aio.Channel,
    session: Session,
) -> None:
    """Answer offers one by one, and hold each accepted conversation."""
    tenant_id, agent_id = session.user.tenant_id, session.user.agent_id
    while True:
        offer = await offers.get()
        print("accept? [y/n] ", end="", flush=True)
        accept = (await anext(lines, "n")).strip().lower().startswith("y")
        await acd.RespondToOffer(
            acd_pb2.RespondToOfferRequest(
                tenant_id=tenant_id, offer_id=offer.id, agent_id=agent_id, accept=accept
            ),
            metadata=await session.metadata(),
        )
        if not accept:
            continue
        await asyncio.sleep(0.5)
        talk = await StreamClient.connect(
            mch,
            await session.token(),
            mpb.Join(
                tenant_id=tenant_id,
                interaction_id=offer.interaction_id,
                role=R.PARTICIPANT_ROLE_AGENT,
                subject_id=agent_id,
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
                    metadata=await session.metadata(),
                )
                break
            if line:
                talk.send_text(line, uuid.uuid4().hex)
        await talk.close()
        print("-- waiting for offers")
