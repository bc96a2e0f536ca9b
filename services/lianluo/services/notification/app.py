"""Composition root of the notification service: wire the parts together and serve."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lianluo.notification.v1 import notification_pb2 as pb
from lianluo.notification.v1 import notification_pb2_grpc as rpc
from lianluo.runtime import contract
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.notification import events
from lianluo.services.notification.deliveries import EMAIL, IN_APP, SMS, WEBHOOK, RetryPolicy
from lianluo.services.notification.grpc_api import NotificationApi
from lianluo.services.notification.repository import Repository
from lianluo.services.notification.senders import (
    EmailSender,
    Gateway,
    GatewaySender,
    Sender,
    WebhookSender,
)
from lianluo.services.notification.service import NotificationService
from lianluo.services.notification.settings import NotificationSettings
from lianluo.services.notification.worker import DeliveryWorker

SPEC = ServiceSpec(
    name="notification",
    settings=NotificationSettings,
    migrations=Path(__file__).parent / "migrations",
)


def _now() -> datetime:
    return datetime.now(UTC)


async def build(settings: NotificationSettings, clock: Callable[[], datetime] = _now) -> Service:
    """Start storage, follow tenant configuration, and wire every part; the caller serves it.
    `clock` tells the time to rules and the worker (a test brings a scheduled notice forward
    with its own)."""
    service = Service(SPEC, settings)
    await service.start_storage()
    view = await service.follow_tenant_config()
    repo = Repository()
    status_topic = settings.topic(contract.NOTIFICATION_STATUS.name)
    logic = NotificationService(
        service.pool,
        repo,
        view,
        status_topic=status_topic,
        business_topic=settings.topic(contract.BUSINESS_EVENT.name),
        notify_from_address=settings.smtp_from_address,
        schedule_grace=timedelta(seconds=settings.schedule_grace_seconds),
        clock=clock,
    )
    await service.add_consumer(events.handlers(logic))
    senders: dict[int, Sender] = {
        WEBHOOK: WebhookSender(settings.webhook_timeout_seconds),
    }
    # One channel to the gateway: texts, inboxes, and who opted out of e-mail.
    gateway = Gateway(settings)
    senders[EMAIL] = EmailSender(settings, gateway)
    senders[SMS] = senders[IN_APP] = GatewaySender(gateway)
    service.add_background(
        DeliveryWorker(
            service.pool,
            repo,
            view,
            senders,
            status_topic=status_topic,
            policy=RetryPolicy(
                settings.retry_base_seconds, settings.retry_cap_seconds, settings.max_attempts
            ),
            batch_size=settings.worker_batch_size,
            poll_seconds=settings.worker_poll_seconds,
            lease_seconds=settings.sending_lease_seconds,
            clock=clock,
        ),
        "delivery worker",
    )
    service.add_grpc(
        rpc.add_NotificationServiceServicer_to_server,
        NotificationApi(logic),
        pb.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    )
    return service


async def serve(settings: NotificationSettings) -> None:
    await (await build(settings)).serve()
