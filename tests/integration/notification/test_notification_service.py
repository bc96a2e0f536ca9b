"""The notification service end to end: the closed loop (contact flow step 16) through a real
webhook receiver and a real SMTP server, retries, and the NotificationService API (Notify, Get,
List, PublishBusinessEvent with threshold rules), all with configuration from the tenants API.

One module, one service: the broker makes a rejoining consumer group wait for its old member's
session to time out, so a second module would spend most of its time waiting."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from conftest import Served, Stack
from factories import Client, onboard
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from notification_support import (
    CUSTOMER,
    SECRET,
    World,
    configure,
    created,
    ended,
    running_world,
    wait_delivery,
    wait_for_key,
    webhook_rule,
)

from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.media.v1 import media_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.tenants.v1 import tenants_pb2 as tpb

pytestmark = pytest.mark.integration
DELIVERED = npb.DELIVERY_STATUS_DELIVERED
FAILED = npb.DELIVERY_STATUS_FAILED


@pytest.fixture(scope="module")
async def world(stack: Stack, tenants_service: Served) -> AsyncIterator[World]:
    async with running_world(stack, tenants_service.address) as w:
        yield w


def closed_template(name: str) -> tpb.NotificationTemplate:
    return tpb.NotificationTemplate(
        name=name,
        channel=tpb.DELIVERY_CHANNEL_WEBHOOK,
        body="Hi {{customer_name}} ({{tier}}), case {{case_id}} is {{resolution}}: "
        "{{resolution_note}}.{{no_such_value}}",
    )


async def one_tenant_with_webhook_rule(
    w: World, path: str, resolutions: list[str] | None = None
) -> tuple[tpb.Tenant, Client, tpb.NotificationRule]:
    t, c = await onboard(w.admin)
    rule = await configure(
        w.served,
        c,
        t.id,
        closed_template("case-closed"),
        webhook_rule("closed-loop", "case-closed", w.receiver.url(path), resolutions),
    )
    return t, c, rule


async def test_a_resolved_interaction_sends_one_signed_webhook(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    path = w.receiver.new_path()
    t, c, rule = await one_tenant_with_webhook_rule(w, path, ["resolved"])
    interaction_id = str(uuid.uuid4())
    await w.topics.interaction(created(t.id, interaction_id, CUSTOMER))
    end = ended(t.id, interaction_id, "resolved", "card replaced")
    await w.topics.interaction(end)

    [hook] = await w.receiver.wait(path, 1)
    body = json.loads(hook.body)
    text = f"Hi Wang Fang (gold), case {interaction_id} is resolved: card replaced."
    assert body["body"] == text
    assert body["tenant_id"] == t.id
    assert body["interaction_id"] == interaction_id
    assert body["customer_id"] == "cust-42"
    assert body["rule"] == "closed-loop"
    assert body["source_event_id"] == end.event_id
    expected = hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Lianluo-Signature"] == f"sha256={expected}"
    assert hook.headers["X-Lianluo-Delivery"] == body["delivery_id"]
    assert any("no_such_value" in r.getMessage() for r in caplog.records)

    # The same event redelivered, and a second "ended" for the same interaction, send nothing;
    # a later interaction of the same tenant (same partition, so processed after them) does.
    await w.topics.interaction(end)
    await w.topics.interaction(ended(t.id, interaction_id, "resolved"))
    later_id, _ = await w.close_interaction(t.id, "resolved")
    hooks = await w.receiver.wait(path, 2)
    await asyncio.sleep(0.3)
    sent_for = [json.loads(h.body)["interaction_id"] for h in w.receiver.hooks(path)]
    assert sorted(sent_for) == sorted([interaction_id, later_id]), hooks

    delivery = await wait_delivery(
        w.stub,
        c.md,
        t.id,
        body["delivery_id"],
        lambda d: d.status == npb.DELIVERY_STATUS_DELIVERED,
    )
    assert delivery.attempts == 1
    assert delivery.rule_id == rule.id
    assert delivery.recipient.webhook.url == w.receiver.url(path)
    assert not delivery.recipient.webhook.signing_secret
    statuses = await w.topics.wait_statuses(body["delivery_id"], "notification.delivered")
    assert statuses == ["notification.pending", "notification.sending", "notification.delivered"]


async def test_a_failing_receiver_is_retried_until_it_answers(world: World) -> None:
    w = world
    path = w.receiver.new_path([500, 500, 200])
    t, c, _ = await one_tenant_with_webhook_rule(w, path)
    await w.close_interaction(t.id, "resolved")

    hooks = await w.receiver.wait(path, 3)
    delivery_ids = {h.headers["X-Lianluo-Delivery"] for h in hooks}
    assert len(delivery_ids) == 1, "every attempt carries the same delivery id"
    [delivery_id] = delivery_ids
    delivery = await wait_delivery(
        w.stub, c.md, t.id, delivery_id, lambda d: d.status == npb.DELIVERY_STATUS_DELIVERED
    )
    assert delivery.attempts == 3
    assert delivery.HasField("deliver_time")
    statuses = await w.topics.wait_statuses(delivery_id, "notification.delivered")
    assert statuses == [
        "notification.pending",
        "notification.sending",
        "notification.pending",
        "notification.sending",
        "notification.pending",
        "notification.sending",
        "notification.delivered",
    ]


async def test_a_client_error_fails_at_once(world: World) -> None:
    w = world
    path = w.receiver.new_path([400])
    t, c, _ = await one_tenant_with_webhook_rule(w, path)
    await w.close_interaction(t.id, "resolved")

    [hook] = await w.receiver.wait(path, 1)
    delivery = await wait_delivery(
        w.stub,
        c.md,
        t.id,
        hook.headers["X-Lianluo-Delivery"],
        lambda d: d.status == npb.DELIVERY_STATUS_FAILED,
    )
    assert delivery.attempts == 1
    assert delivery.last_error == "webhook answered 400"
    await asyncio.sleep(0.6)  # longer than the retry backoff: no second attempt comes
    assert len(w.receiver.hooks(path)) == 1


async def test_an_email_rule_sends_through_smtp(world: World) -> None:
    w = world
    t, c = await onboard(w.admin)
    await configure(
        w.served,
        c,
        t.id,
        tpb.NotificationTemplate(
            name="case-closed-mail",
            channel=tpb.DELIVERY_CHANNEL_EMAIL,
            subject="Your case {{case_id}} is closed",
            body="Dear {{customer_name}}, we have {{resolution}} your case.",
        ),
        tpb.NotificationRule(
            name="closed-mail",
            interaction_closed=tpb.InteractionClosedTrigger(),
            template="case-closed-mail",
            email=tpb.EmailTarget(from_address="care@acme.test"),
            enabled=True,
        ),
    )
    customer = media_pb2.Customer()
    customer.CopyFrom(CUSTOMER)
    customer.address = f"{uuid.uuid4().hex[:8]}@example.test"
    interaction_id = str(uuid.uuid4())
    await w.topics.interaction(created(t.id, interaction_id, customer))
    await w.topics.interaction(ended(t.id, interaction_id, "resolved"))

    [(sender, recipients, message)] = await w.mail.wait_to(customer.address)
    assert sender == "care@acme.test"
    assert recipients == [customer.address]
    assert message["Subject"] == f"Your case {interaction_id} is closed"
    assert message.get_payload(decode=True).decode().strip() == (  # type: ignore[union-attr]
        "Dear Wang Fang, we have resolved your case."
    )
    delivery_id = message["X-Lianluo-Delivery"]
    delivery = await wait_delivery(
        w.stub, c.md, t.id, delivery_id, lambda d: d.status == npb.DELIVERY_STATUS_DELIVERED
    )
    assert delivery.recipient.email_address == customer.address
    assert delivery.channel == tpb.DELIVERY_CHANNEL_EMAIL

    # The customer unsubscribes (the gateway's one-click link, here its customer store's row):
    # the next case's notice is not sent.
    gateway = grpc.aio.insecure_channel(w.gateway.address)
    found = await gateway_rpc.CustomerServiceStub(gateway).ResolveCustomer(
        gpb.ResolveCustomerRequest(
            tenant_id=t.id, kind=gpb.IDENTITY_KIND_EMAIL, value=customer.address
        ),
        metadata=c.md,
    )
    await gateway.close()
    conn = await asyncpg.connect(w.database_url)
    try:
        await conn.execute(
            "update gateway.identities set opted_out_at = now() "
            "where tenant_id = $1 and value = $2",
            uuid.UUID(found.tenant_id),
            customer.address,
        )
    finally:
        await conn.close()
    later = str(uuid.uuid4())
    await w.topics.interaction(created(t.id, later, customer))
    await w.topics.interaction(ended(t.id, later, "answered"))  # another text
    async with asyncio.timeout(20):
        while True:
            listed = await w.stub.ListDeliveries(
                npb.ListDeliveriesRequest(tenant_id=t.id, status=npb.DELIVERY_STATUS_FAILED),
                metadata=c.md,
            )
            if listed.deliveries:
                break
            await asyncio.sleep(0.1)
    assert "opted out" in listed.deliveries[0].last_error
    assert len(await w.mail.wait_to(customer.address)) == 1, "nothing more was sent"


async def test_a_resolution_outside_the_rule_sends_nothing(world: World) -> None:
    w = world
    path = w.receiver.new_path()
    t, c, _ = await one_tenant_with_webhook_rule(w, path, ["resolved"])
    unresolved_id, _ = await w.close_interaction(t.id, "unresolved")
    resolved_id, resolved_event = await w.close_interaction(t.id, "resolved")

    # The tenant's events are processed in order, so once the second one is sent the first
    # one has been looked at too.
    [hook] = await w.receiver.wait(path, 1)
    assert json.loads(hook.body)["interaction_id"] == resolved_id
    listed = await w.stub.ListDeliveries(npb.ListDeliveriesRequest(tenant_id=t.id), metadata=c.md)
    assert [d.source_event_id for d in listed.deliveries] == [resolved_event]
    assert unresolved_id not in hook.body.decode()


async def test_another_tenant_cannot_see_a_delivery(world: World) -> None:
    w = world
    path = w.receiver.new_path()
    t, _, _ = await one_tenant_with_webhook_rule(w, path)
    await w.close_interaction(t.id, "resolved")
    [hook] = await w.receiver.wait(path, 1)
    delivery_id = hook.headers["X-Lianluo-Delivery"]
    other, oc = await onboard(w.admin)
    await wait_for_key(w.served, oc.key)

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await w.stub.GetDelivery(
            npb.GetDeliveryRequest(tenant_id=t.id, delivery_id=delivery_id), metadata=oc.md
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await w.stub.GetDelivery(
            npb.GetDeliveryRequest(tenant_id=other.id, delivery_id=delivery_id), metadata=oc.md
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- the API


async def tenant_with_notice(w: World) -> tuple[tpb.Tenant, Client]:
    """A tenant with a webhook template "notice" and a threshold rule on card_spend amount."""
    t, c = await onboard(w.admin)
    await configure(
        w.served,
        c,
        t.id,
        tpb.NotificationTemplate(
            name="notice",
            channel=tpb.DELIVERY_CHANNEL_WEBHOOK,
            body="Hello {{name}}, your code is {{code}}.",
        ),
        tpb.NotificationRule(
            name="big-spend",
            threshold=tpb.ThresholdTrigger(
                event_type="card_spend",
                metric="amount",
                operator=tpb.THRESHOLD_OPERATOR_GREATER,
                threshold=10000,
            ),
            template="notice",
            webhook=tpb.WebhookTarget(url=w.receiver.url(t.id), signing_secret=SECRET),
            enabled=True,
        ),
    )
    return t, c


def notify_request(
    w: World, tenant_id: str, path: str, request_id: str = "", **variables: str
) -> npb.NotifyRequest:
    return npb.NotifyRequest(
        tenant_id=tenant_id,
        request_id=request_id,
        template="notice",
        recipient=npb.Recipient(
            customer_id="cust-7",
            webhook=tpb.WebhookTarget(url=w.receiver.url(path), signing_secret=SECRET),
        ),
        variables=variables,
    )


async def test_notify_sends_once_per_request_id(world: World) -> None:
    w = world
    t, c = await tenant_with_notice(w)
    path = w.receiver.new_path()
    request = notify_request(w, t.id, path, request_id=str(uuid.uuid4()), name="Li", code="4711")
    first = await w.stub.Notify(request, metadata=c.md)
    again = await w.stub.Notify(request, metadata=c.md)
    assert again.id == first.id
    assert first.body == "Hello Li, your code is 4711."
    assert not first.recipient.webhook.signing_secret

    [hook] = await w.receiver.wait(path, 1)
    assert json.loads(hook.body)["body"] == "Hello Li, your code is 4711."
    assert hook.headers["X-Lianluo-Delivery"] == first.id
    done = await wait_delivery(w.stub, c.md, t.id, first.id, lambda d: d.status == DELIVERED)
    assert done.request_id == request.request_id
    await asyncio.sleep(0.3)
    assert len(w.receiver.hooks(path)) == 1


async def test_a_receiver_that_keeps_failing_ends_failed_after_the_last_attempt(
    world: World,
) -> None:
    w = world
    t, c = await tenant_with_notice(w)
    path = w.receiver.new_path([503] * 10)
    sent = await w.stub.Notify(notify_request(w, t.id, path, name="Li", code="1"), metadata=c.md)
    done = await wait_delivery(w.stub, c.md, t.id, sent.id, lambda d: d.status == FAILED)
    assert done.attempts == 3
    assert done.last_error == "webhook answered 503"
    assert len(w.receiver.hooks(path)) == 3
    statuses = await w.topics.wait_statuses(sent.id, "notification.failed")
    assert statuses[-1] == "notification.failed"
    assert statuses.count("notification.sending") == 3


async def test_notify_names_the_bad_field(world: World) -> None:
    w = world
    t, c = await tenant_with_notice(w)
    wrong_address = npb.NotifyRequest(
        tenant_id=t.id,
        template="notice",
        recipient=npb.Recipient(email_address="someone@example.test"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await w.stub.Notify(wrong_address, metadata=c.md)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(bad.value)
    assert status is not None
    request = error_details_pb2.BadRequest()
    status.details[0].Unpack(request)
    assert [v.field for v in request.field_violations] == ["recipient.webhook"]

    unknown = notify_request(w, t.id, "x")
    unknown.template = "no-such-template"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await w.stub.Notify(unknown, metadata=c.md)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_deliveries_are_listed_newest_first_in_pages(world: World) -> None:
    w = world
    t, c = await tenant_with_notice(w)
    path = w.receiver.new_path()
    customer = f"cust-{uuid.uuid4().hex[:6]}"
    ids = []
    for code in ("1", "2", "3"):
        request = notify_request(w, t.id, path, name="Li", code=code)
        request.recipient.customer_id = customer
        ids.append((await w.stub.Notify(request, metadata=c.md)).id)

    page_request = npb.ListDeliveriesRequest(tenant_id=t.id, customer_id=customer)
    page_request.page.page_size = 2
    first = await w.stub.ListDeliveries(page_request, metadata=c.md)
    page_request.page.page_token = first.page.next_page_token
    second = await w.stub.ListDeliveries(page_request, metadata=c.md)
    assert [d.id for d in [*first.deliveries, *second.deliveries]] == ids[::-1]
    assert second.page.next_page_token == ""

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await w.stub.ListDeliveries(
            npb.ListDeliveriesRequest(tenant_id=t.id, status=99), metadata=c.md
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_business_event_over_the_threshold_fires_the_rule_once(world: World) -> None:
    w = world
    t, c = await tenant_with_notice(w)
    request = npb.PublishBusinessEventRequest(
        tenant_id=t.id,
        request_id=str(uuid.uuid4()),
        type="card_spend",
        customer_id="cust-9",
        metrics={"amount": 12000, "limit": 10000},
        attributes={"name": "Zhao Lei", "code": "CARD-1"},
    )
    published = await w.stub.PublishBusinessEvent(request, metadata=c.md)
    retried = await w.stub.PublishBusinessEvent(request, metadata=c.md)
    assert retried.event_id == published.event_id

    small = npb.PublishBusinessEventRequest(
        tenant_id=t.id, type="card_spend", customer_id="cust-9", metrics={"amount": 50}
    )
    await w.stub.PublishBusinessEvent(small, metadata=c.md)
    marker = npb.PublishBusinessEventRequest(
        tenant_id=t.id, type="card_spend", customer_id="cust-10", metrics={"amount": 10001}
    )
    marked = await w.stub.PublishBusinessEvent(marker, metadata=c.md)

    hooks = await w.receiver.wait(t.id, 2)
    bodies = {b["source_event_id"]: b for b in (json.loads(h.body) for h in hooks)}
    assert set(bodies) == {published.event_id, marked.event_id}
    assert bodies[published.event_id]["body"] == "Hello Zhao Lei, your code is CARD-1."
    assert bodies[published.event_id]["event_type"] == "card_spend"
    listed = await w.stub.ListDeliveries(
        npb.ListDeliveriesRequest(tenant_id=t.id, source_event_id=published.event_id),
        metadata=c.md,
    )
    assert len(listed.deliveries) == 1
    assert listed.deliveries[0].recipient.customer_id == "cust-9"
