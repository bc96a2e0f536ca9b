"""Scheduled notices by SMS, end to end: a card-expiry business event becomes a text 30 days
before the date, at the customer's local time, held back in quiet hours, and sent once although
two notification replicas share the work. Both replicas tell the time by one injected clock;
the tenants service and the channel gateway run as their own processes, and the text reaches a
local provider that speaks the Twilio-compatible API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import grpc
import pytest
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, onboard, queue
from google.protobuf import field_mask_pb2
from notification_support import Served, run_notification, wait_for_config
from sms_provider import SID, TOKEN, Provider, signed, sms_provider

from lianluo.devstack.cell import Cell
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.notification.v1 import notification_pb2_grpc as nrpc
from lianluo.tenants.v1 import tenants_pb2 as tpb
from lianluo.tenants.v1 import tenants_pb2_grpc as trpc

pytestmark = pytest.mark.integration
SHANGHAI = ZoneInfo("Asia/Shanghai")
NUMBER = "+15550002222"
PENDING = npb.DELIVERY_STATUS_PENDING
DELIVERED = npb.DELIVERY_STATUS_DELIVERED
FAILED = npb.DELIVERY_STATUS_FAILED
# How long both replicas' workers get to send what they should not: each looks every 0.1 s.
SETTLE = 1.5
TEXT = "Card {{card_last4}} expires on {{card_expiry}}. Renew it in the app."


@dataclass
class Clock:
    """The time both replicas tell; a test moves it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when.astimezone(UTC)


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("notices"))
    with running_cell(
        stack, folder, f"notices_{uuid.uuid4().hex[:10]}", services=["tenants", "media", "gateway"]
    ) as running:
        yield running


@dataclass
class World:
    clock: Clock
    provider: Provider
    replicas: list[Served]
    tenant: tpb.Tenant
    client: Client
    notices: nrpc.NotificationServiceStub
    webhook: str
    inbox: gateway_rpc.NoticeServiceStub


@pytest.fixture(scope="module")
async def world(stack: Stack, cell: Cell) -> AsyncIterator[World]:
    # 10:00 in Shanghai.
    clock = Clock(datetime(2027, 3, 1, 2, 0, tzinfo=UTC))
    env = {
        "LIANLUO_DATABASE_URL": cell.env["LIANLUO_DATABASE_URL"],
        "LIANLUO_TOPIC_PREFIX": cell.env["LIANLUO_TOPIC_PREFIX"],
        "LIANLUO_NOTIFICATION_GATEWAY_ADDRESS": cell.address("gateway"),
    }
    async with (
        sms_provider() as provider,
        run_notification(stack, clock, **env) as first,
        run_notification(stack, clock, **env) as second,
        grpc.aio.insecure_channel(cell.address("tenants")) as tch,
        grpc.aio.insecure_channel(first.address) as nch,
        grpc.aio.insecure_channel(cell.address("gateway")) as gch,
    ):
        admin = Client(tch, ADMIN_KEY)
        tenant, client = await onboard(admin)
        tenant.notices.CopyFrom(
            tpb.NoticePolicy(
                time_zone="Asia/Shanghai",
                quiet_hours=tpb.QuietHours(start="21:00", end="08:00"),
            )
        )
        await client.tenants.UpdateTenant(
            tpb.UpdateTenantRequest(
                tenant=tenant, update_mask=field_mask_pb2.FieldMask(paths=["notices"])
            ),
            metadata=client.md,
        )
        await client.queues.CreateQueue(
            tpb.CreateQueueRequest(tenant_id=tenant.id, queue=queue()), metadata=client.md
        )
        channel = await trpc.ChannelServiceStub(tch).CreateChannel(
            tpb.CreateChannelRequest(
                tenant_id=tenant.id,
                channel=tpb.Channel(
                    name="texts",
                    queue="cards",
                    sms=tpb.SmsChannel(
                        number=NUMBER, account_sid=SID, auth_token=TOKEN, api_base_url=provider.url
                    ),
                ),
            ),
            metadata=client.md,
        )
        await client.notifications.CreateTemplate(
            tpb.CreateTemplateRequest(
                tenant_id=tenant.id,
                template=tpb.NotificationTemplate(
                    name="card-expiry", channel=tpb.DELIVERY_CHANNEL_SMS, body=TEXT
                ),
            ),
            metadata=client.md,
        )
        await client.notifications.CreateRule(
            tpb.CreateRuleRequest(
                tenant_id=tenant.id,
                rule=tpb.NotificationRule(
                    name="card-expiry",
                    schedule=tpb.ScheduleTrigger(date_attribute="card_expiry", days_before=30),
                    template="card-expiry",
                    sms=tpb.SmsTarget(channel="texts"),
                    enabled=True,
                ),
            ),
            metadata=client.md,
        )
        for replica in (first, second):
            await wait_for_config(replica, tenant.id, "notification_rule", "card-expiry")
        webhook = f"{cell.replica('gateway').http_url}/v1/sms/{tenant.id}/{channel.id}"
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while (await http.post(webhook, data={})).status == 404:  # until the gateway knows it
                await asyncio.sleep(0.2)
        yield World(
            clock,
            provider,
            [first, second],
            tenant,
            client,
            nrpc.NotificationServiceStub(nch),
            webhook,
            gateway_rpc.NoticeServiceStub(gch),
        )


async def card_event(w: World, phone: str, expiry: str, **attributes: str) -> list[npb.Delivery]:
    """Publish a card's expiry for a new customer; their scheduled delivery, once made."""
    customer = f"c-{uuid.uuid4().hex[:8]}"
    await w.notices.PublishBusinessEvent(
        npb.PublishBusinessEventRequest(
            tenant_id=w.tenant.id,
            type="card_status",
            customer_id=customer,
            attributes={"phone": phone, "card_expiry": expiry, "card_last4": "4242", **attributes},
        ),
        metadata=w.client.md,
    )
    async with asyncio.timeout(20):
        while True:
            found = await w.notices.ListDeliveries(
                npb.ListDeliveriesRequest(tenant_id=w.tenant.id, customer_id=customer),
                metadata=w.client.md,
            )
            if found.deliveries:
                return list(found.deliveries)
            await asyncio.sleep(0.05)


async def delivery(w: World, d: npb.Delivery) -> npb.Delivery:
    return await w.notices.GetDelivery(
        npb.GetDeliveryRequest(tenant_id=w.tenant.id, delivery_id=d.id), metadata=w.client.md
    )


async def until(w: World, d: npb.Delivery, status: int) -> npb.Delivery:
    async with asyncio.timeout(20):
        while (found := await delivery(w, d)).status != status:
            await asyncio.sleep(0.05)
    return found


async def texts_to(w: World, phone: str) -> list[dict[str, str]]:
    """Every text the provider got for `phone` so far, after the replicas had time to send."""
    await asyncio.sleep(SETTLE)
    got: list[dict[str, str]] = []
    kept: list[dict[str, str]] = []
    while not w.provider.sent.empty():
        form = w.provider.sent.get_nowait()
        (got if form["To"] == phone else kept).append(form)
    for form in kept:
        w.provider.sent.put_nowait(form)
    return got


def phone() -> str:
    return "+86139" + str(uuid.uuid4().int)[:8]


async def test_a_card_expiring_in_30_days_and_a_minute_is_texted_once_a_minute_from_now(
    world: World,
) -> None:
    w, to = world, phone()
    start = w.clock.now
    expiry = (start + timedelta(days=30, minutes=1)).astimezone(SHANGHAI).isoformat()
    (scheduled,) = await card_event(w, to, expiry)
    assert scheduled.status == PENDING
    assert scheduled.channel == tpb.DELIVERY_CHANNEL_SMS
    assert scheduled.next_attempt_time.ToDatetime(UTC) == start + timedelta(minutes=1)

    w.clock.set(start + timedelta(seconds=50))
    assert await texts_to(w, to) == [], "nothing goes out before its time"
    assert (await delivery(w, scheduled)).status == PENDING

    w.clock.set(start + timedelta(minutes=1, seconds=5))
    sent = await until(w, scheduled, DELIVERED)
    texts = await texts_to(w, to)
    assert len(texts) == 1, "two replicas, one text"
    assert texts[0]["From"] == NUMBER
    assert texts[0]["Body"] == f"Card 4242 expires on {expiry}. Renew it in the app."
    assert sent.attempts == 1
    assert sent.body == texts[0]["Body"]

    # The provider reports the text reached the phone: the delivery says when.
    assert await w.provider.report(texts[0], "sent") == 204
    assert await w.provider.report(texts[0], "delivered") == 204
    async with asyncio.timeout(20):
        while not (await delivery(w, scheduled)).HasField("receipt_time"):
            await asyncio.sleep(0.05)
    assert (await delivery(w, scheduled)).status == DELIVERED


async def test_a_date_is_texted_at_nine_in_the_morning_where_the_customer_lives(
    world: World,
) -> None:
    w, to = world, phone()
    # A customer in New York: 09:00 there is 13:00 UTC once clocks go forward in March.
    (scheduled,) = await card_event(w, to, "2027-04-30", time_zone="America/New_York")
    due = datetime(2027, 3, 31, 9, 0, tzinfo=ZoneInfo("America/New_York"))
    assert scheduled.next_attempt_time.ToDatetime(UTC) == due.astimezone(UTC)

    w.clock.set(due - timedelta(minutes=1))
    assert await texts_to(w, to) == []
    w.clock.set(due + timedelta(seconds=10))
    await until(w, scheduled, DELIVERED)
    assert len(await texts_to(w, to)) == 1


async def test_a_notice_due_in_quiet_hours_waits_for_the_morning(world: World) -> None:
    w, to = world, phone()
    # Due at 23:00 in Shanghai, inside the tenant's quiet hours (21:00 to 08:00).
    due = datetime(2027, 4, 2, 23, 0, tzinfo=SHANGHAI)
    expiry = (due + timedelta(days=30)).isoformat()
    (scheduled,) = await card_event(w, to, expiry)
    assert scheduled.next_attempt_time.ToDatetime(UTC) == due.astimezone(UTC)

    w.clock.set(due + timedelta(seconds=10))
    morning = datetime(2027, 4, 3, 8, 0, tzinfo=SHANGHAI)
    async with asyncio.timeout(20):
        while (held := await delivery(w, scheduled)).next_attempt_time.ToDatetime(UTC) != morning:
            await asyncio.sleep(0.05)
    assert held.status == PENDING
    assert held.attempts == 0, "a held notice has not been tried"
    assert await texts_to(w, to) == [], "held in quiet hours"

    w.clock.set(morning + timedelta(seconds=10))
    await until(w, scheduled, DELIVERED)
    assert len(await texts_to(w, to)) == 1


async def test_a_number_that_texted_stop_gets_no_notice(world: World) -> None:
    w, to = world, phone()
    form = {"From": to, "To": NUMBER, "Body": "STOP", "MessageSid": "SM" + uuid.uuid4().hex}
    async with aiohttp.ClientSession() as http:
        answer = await http.post(
            w.webhook, data=form, headers={"X-Twilio-Signature": signed(w.webhook, form)}
        )
        assert answer.status == 200
    due = w.clock.now + timedelta(minutes=5)
    (scheduled,) = await card_event(w, to, (due + timedelta(days=30)).isoformat())
    w.clock.set(due + timedelta(seconds=10))
    failed = await until(w, scheduled, FAILED)
    assert "opted out" in failed.last_error
    assert await texts_to(w, to) == []


async def test_a_text_the_carrier_cannot_deliver_fails_with_its_reason(world: World) -> None:
    w, to = world, phone()
    due = w.clock.now + timedelta(minutes=5)
    (scheduled,) = await card_event(w, to, (due + timedelta(days=30)).isoformat())
    w.clock.set(due + timedelta(seconds=10))
    await until(w, scheduled, DELIVERED)
    (text,) = await texts_to(w, to)
    assert await w.provider.report(text, "undelivered", "30003") == 204
    failed = await until(w, scheduled, FAILED)
    assert "30003 undelivered" in failed.last_error


async def test_a_forged_receipt_is_refused(world: World) -> None:
    w = world
    url = w.webhook + "/status"
    form = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "undelivered"}
    async with aiohttp.ClientSession() as http:
        forged = await http.post(url, data=form, headers={"X-Twilio-Signature": "Zm9yZ2Vk"})
        assert forged.status == 403
        bad = {"MessageSid": "no/such", "MessageStatus": "delivered"}
        refused = await http.post(url, data=bad, headers={"X-Twilio-Signature": signed(url, bad)})
        assert refused.status == 400


async def test_an_in_app_notice_waits_in_the_customers_inbox_until_read(world: World) -> None:
    w, customer = world, f"c-{uuid.uuid4().hex[:8]}"
    await w.client.notifications.CreateTemplate(
        tpb.CreateTemplateRequest(
            tenant_id=w.tenant.id,
            template=tpb.NotificationTemplate(
                name="statement-ready",
                channel=tpb.DELIVERY_CHANNEL_IN_APP,
                subject="Your statement",
                body="Your {{month}} statement is ready.",
            ),
        ),
        metadata=w.client.md,
    )
    for replica in w.replicas:
        await wait_for_config(replica, w.tenant.id, "notification_template", "statement-ready")
    request = npb.NotifyRequest(
        tenant_id=w.tenant.id,
        request_id="statement-2027-03",
        template="statement-ready",
        recipient=npb.Recipient(customer_id=customer),
        variables={"month": "March"},
    )
    first = await w.notices.Notify(request, metadata=w.client.md)
    again = await w.notices.Notify(request, metadata=w.client.md)
    assert again.id == first.id
    await until(w, first, DELIVERED)

    def inbox(unread_only: bool = False) -> object:
        return w.inbox.ListInbox(
            gpb.ListInboxRequest(
                tenant_id=w.tenant.id, customer_id=customer, unread_only=unread_only
            ),
            metadata=w.client.md,
        )

    listed = await inbox()
    assert [(n.subject, n.body) for n in listed.notices] == [
        ("Your statement", "Your March statement is ready.")
    ]
    read = await w.inbox.MarkInboxRead(
        gpb.MarkInboxReadRequest(
            tenant_id=w.tenant.id, customer_id=customer, notice_id=listed.notices[0].id
        ),
        metadata=w.client.md,
    )
    assert read.HasField("read_time")
    assert list((await inbox(unread_only=True)).notices) == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await w.notices.Notify(
            npb.NotifyRequest(
                tenant_id=w.tenant.id,
                template="statement-ready",
                recipient=npb.Recipient(phone_number="+8613800138000"),
            ),
            metadata=w.client.md,
        )
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recipient.customer_id" in missing.value.details()
