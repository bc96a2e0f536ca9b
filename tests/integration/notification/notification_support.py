"""Helpers for the notification tests: the service in-process, a real webhook receiver (aiohttp),
a real SMTP server (aiosmtpd), and the real topics in and out."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import grpc
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiosmtpd.controller import Controller
from conftest import ADMIN_KEY, Stack
from factories import Client

from lianluo.common.v1 import common_pb2
from lianluo.events.v1 import envelope_pb2, interaction_pb2, notification_pb2
from lianluo.media.v1 import media_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.notification.v1 import notification_pb2_grpc as nrpc
from lianluo.runtime import auth
from lianluo.runtime.kafka import new_envelope
from lianluo.runtime.service import Service
from lianluo.services.notification.app import build
from lianluo.services.notification.settings import NotificationSettings
from lianluo.tenants.v1 import tenants_pb2 as tpb

WAIT = 20.0
SECRET = "whsec-" + "k" * 26


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the service


@dataclass
class Served:
    address: str
    process: Service


@asynccontextmanager
async def serving(process: Service) -> AsyncIterator[Served]:
    """A built service serving in this process until the block ends."""
    task = asyncio.create_task(process.serve())
    while not process.grpc.port:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield Served(f"127.0.0.1:{process.grpc.port}", process)
    finally:
        process.request_stop()
        await task


@asynccontextmanager
async def run_notification(
    stack: Stack, clock: Callable[[], datetime] | None = None, **env: str
) -> AsyncIterator[Served]:
    """The notification service in this process, with fast retries unless `env` says otherwise,
    telling the time by `clock` when given."""
    values = {
        "LIANLUO_RETRY_BASE_SECONDS": "0.2",
        "LIANLUO_RETRY_CAP_SECONDS": "0.5",
        "LIANLUO_MAX_ATTEMPTS": "3",
        "LIANLUO_WORKER_POLL_SECONDS": "0.1",
        "LIANLUO_WEBHOOK_TIMEOUT_SECONDS": "5",
        **env,
    }
    settings = NotificationSettings(
        **{
            k.removeprefix("LIANLUO_").lower(): v
            for k, v in stack.env(LIANLUO_GRPC_PORT="0", **values).items()
        }
    )
    process = await (build(settings) if clock is None else build(settings, clock))
    async with serving(process) as served:
        yield served


@asynccontextmanager
async def run_gateway(stack: Stack, tenants_address: str, objects: str) -> AsyncIterator[Served]:
    """The channel gateway in this process: its customer store says who opted out, and it
    texts and keeps inboxes for the notification service."""
    from lianluo.services.gateway.app import build as build_gateway
    from lianluo.services.gateway.settings import GatewaySettings

    values = stack.env(
        LIANLUO_GRPC_PORT="0",
        LIANLUO_GATEWAY_HTTP_PORT=str(free_port()),
        LIANLUO_GATEWAY_SMTP_PORT=str(free_port()),
        LIANLUO_GATEWAY_TENANTS_ADDRESS=tenants_address,
        # No media service here: nothing these tests do reaches it.
        LIANLUO_GATEWAY_MEDIA_ADDRESS="127.0.0.1:9",
        LIANLUO_OBJECT_STORE_PATH=objects,
    )
    settings = GatewaySettings(**{k.removeprefix("LIANLUO_").lower(): v for k, v in values.items()})
    async with serving(await build_gateway(settings)) as served:
        yield served


async def wait_for_config(served: Served, tenant_id: str, kind: str, name: str) -> None:
    """Until the service's own view of tenant configuration has the resource."""
    view = served.process.config
    assert view is not None
    async with asyncio.timeout(WAIT):
        await view.wait_until(lambda: view.by_name(tenant_id, kind, name) is not None)


async def configure(
    served: Served,
    client: Client,
    tenant_id: str,
    template: tpb.NotificationTemplate,
    rule: tpb.NotificationRule,
) -> tpb.NotificationRule:
    """Create a template and a rule through the tenants API; wait until the service sees both."""
    await client.notifications.CreateTemplate(
        tpb.CreateTemplateRequest(tenant_id=tenant_id, template=template), metadata=client.md
    )
    created = await client.notifications.CreateRule(
        tpb.CreateRuleRequest(tenant_id=tenant_id, rule=rule), metadata=client.md
    )
    await wait_for_config(served, tenant_id, "notification_rule", rule.name)
    return created


async def wait_for_key(served: Served, key: str) -> None:
    """Until the service's view can authenticate `key` (it travels on tenant.config)."""
    view = served.process.config
    assert view is not None
    key_id, secret = auth.parse_token(key)
    async with asyncio.timeout(WAIT):
        while await view.resolve(key_id, auth.sha256_hex(secret)) is None:
            await asyncio.sleep(0.05)


def webhook_rule(
    name: str, template: str, url: str, resolutions: list[str] | None = None
) -> tpb.NotificationRule:
    return tpb.NotificationRule(
        name=name,
        interaction_closed=tpb.InteractionClosedTrigger(resolutions=resolutions or []),
        template=template,
        webhook=tpb.WebhookTarget(url=url, signing_secret=SECRET),
        enabled=True,
    )


async def wait_delivery(
    stub: nrpc.NotificationServiceStub,
    md: Any,
    tenant_id: str,
    delivery_id: str,
    done: Callable[[npb.Delivery], bool],
) -> npb.Delivery:
    async with asyncio.timeout(WAIT):
        while True:
            d = await stub.GetDelivery(
                npb.GetDeliveryRequest(tenant_id=tenant_id, delivery_id=delivery_id), metadata=md
            )
            if done(d):
                return d
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------- webhook receiver


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST, answering per path as scripted."""

    received: dict[str, list[Hook]] = field(default_factory=dict)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def new_path(self, answers: list[int] | None = None) -> str:
        """A fresh path; its POSTs get `answers` in turn, then 200."""
        path = f"hook-{uuid.uuid4().hex[:10]}"
        self.scripts[path] = list(answers or [])
        return path

    def hooks(self, path: str) -> list[Hook]:
        return self.received.get(path, [])

    async def wait(self, path: str, count: int) -> list[Hook]:
        async with asyncio.timeout(WAIT):
            while len(self.hooks(path)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.hooks(path)

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.received.setdefault(path, []).append(Hook(dict(request.headers), await request.read()))
        self._changed.set()
        script = self.scripts.get(path, [])
        return web.Response(status=script.pop(0) if script else 200)


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/{path}", receiver._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- SMTP server


class MailSink:
    """A real SMTP server (aiosmtpd, in its own thread) that keeps every message it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._messages: list[tuple[str, list[str], Message]] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self._lock:
            self._messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
            )
        return "250 Message accepted for delivery"

    def messages(self) -> list[tuple[str, list[str], Message]]:
        with self._lock:
            return list(self._messages)

    async def wait_to(self, address: str) -> list[tuple[str, list[str], Message]]:
        async with asyncio.timeout(WAIT):
            while not (found := [m for m in self.messages() if address in m[1]]):
                await asyncio.sleep(0.05)
        return found

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


# ---------------------------------------------------------------- topics


class Topics:
    """Publishes input events and records `notification.status`, on the session's real topics."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
        self._consumer = AIOKafkaConsumer(
            f"{stack.topic_prefix}notification.status",
            bootstrap_servers=stack.kafka,
            group_id=None,
            auto_offset_reset="earliest",
        )
        self.statuses: list[envelope_pb2.Envelope] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()
        await self._producer.stop()

    async def _collect(self) -> None:
        async for record in self._consumer:
            self.statuses.append(envelope_pb2.Envelope.FromString(record.value or b""))

    async def publish(self, topic: str, envelope: envelope_pb2.Envelope) -> None:
        await self._producer.send_and_wait(
            f"{self._stack.topic_prefix}{topic}",
            value=envelope.SerializeToString(),
            key=envelope.tenant_id.encode(),
        )

    async def interaction(self, envelope: envelope_pb2.Envelope) -> None:
        await self.publish("interaction.event", envelope)

    def status_types(self, delivery_id: str) -> list[str]:
        out = []
        for envelope in self.statuses:
            change = notification_pb2.DeliveryStatusChanged()
            envelope.payload.Unpack(change)
            if change.delivery.id == delivery_id:
                out.append(envelope.type)
        return out

    async def wait_statuses(self, delivery_id: str, last: str) -> list[str]:
        async with asyncio.timeout(WAIT):
            while last not in self.status_types(delivery_id):
                await asyncio.sleep(0.05)
        return self.status_types(delivery_id)


def created(
    tenant_id: str, interaction_id: str, customer: media_pb2.Customer
) -> envelope_pb2.Envelope:
    event = interaction_pb2.InteractionEvent(
        interaction_id=interaction_id,
        sequence=1,
        created=media_pb2.Interaction(
            id=interaction_id,
            tenant_id=tenant_id,
            channel=common_pb2.CHANNEL_WEB,
            state=media_pb2.INTERACTION_STATE_CREATED,
            customer=customer,
            entry_queue="cards",
        ),
    )
    return new_envelope("interaction.created", tenant_id, event, "media")


def ended(
    tenant_id: str, interaction_id: str, resolution: str, note: str = ""
) -> envelope_pb2.Envelope:
    event = interaction_pb2.InteractionEvent(
        interaction_id=interaction_id,
        sequence=9,
        ended=media_pb2.InteractionEnd(
            final_state=media_pb2.INTERACTION_STATE_CLOSED,
            resolution=media_pb2.Resolution(code=resolution, note=note),
        ),
    )
    return new_envelope("interaction.ended", tenant_id, event, "media")


# ---------------------------------------------------------------- everything together

CUSTOMER = media_pb2.Customer(
    id="cust-42",
    display_name="Wang Fang",
    address="wang.fang@example.test",
    attributes={"tier": "gold"},
)


@dataclass
class World:
    """The running service and everything around it that a test talks to."""

    served: Served
    admin: Client
    stub: nrpc.NotificationServiceStub
    receiver: WebhookReceiver
    mail: MailSink
    topics: Topics
    gateway: Served
    database_url: str

    async def close_interaction(
        self, tenant_id: str, resolution: str, note: str = ""
    ) -> tuple[str, str]:
        """Publish created then ended for a new interaction; (interaction id, ended event id)."""
        interaction_id = str(uuid.uuid4())
        await self.topics.interaction(created(tenant_id, interaction_id, CUSTOMER))
        end = ended(tenant_id, interaction_id, resolution, note)
        await self.topics.interaction(end)
        return interaction_id, end.event_id


@asynccontextmanager
async def running_world(stack: Stack, tenants_address: str) -> AsyncIterator[World]:
    """One notification service (with an SMTP server and a webhook receiver) for a module."""
    mail = MailSink()
    mail.start()
    topics = Topics(stack)
    await topics.start()
    try:
        async with (
            webhook_receiver() as receiver,
            run_gateway(stack, tenants_address, tempfile.mkdtemp(prefix="objects")) as gateway,
            run_notification(
                stack,
                LIANLUO_SMTP_HOST="127.0.0.1",
                LIANLUO_SMTP_PORT=str(mail.port),
                LIANLUO_NOTIFICATION_GATEWAY_ADDRESS=gateway.address,
            ) as served,
            grpc.aio.insecure_channel(tenants_address) as tenants_channel,
            grpc.aio.insecure_channel(served.address) as channel,
        ):
            yield World(
                served,
                Client(tenants_channel, ADMIN_KEY),
                nrpc.NotificationServiceStub(channel),
                receiver,
                mail,
                topics,
                gateway,
                stack.database_url,
            )
    finally:
        await topics.stop()
        mail.stop()
