"""Composition root of the notification service: wire the parts together and serve."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lianluo.notification.v1 import notification_pb2 as pb
from lianluo.notification.v1 import notification_pb2_grpc as rpc
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.notification import events
from lianluo.services.notification.deliveries import EMAIL, WEBHOOK, RetryPolicy
from lianluo.services.notification.grpc_api import NotificationApi
from lianluo.services.notification.repository import Repository
from lianluo.services.notification.senders import EmailSender, Sender, WebhookSender
from lianluo.services.notification.service import NotificationService
from lianluo.services.notification.settings import NotificationSettings
from lianluo.services.notification.worker import DeliveryWorker

SPEC = ServiceSpec(
    name="notification",
    settings=NotificationSettings,
    migrations=Path(__file__).parent / "migrations",
    topics=[events.INTERACTION_TOPIC, events.BUSINESS_TOPIC, events.STATUS_TOPIC],
)


class NotificationProcess(Service):
    """The shared service lifecycle plus the delivery worker, which stops before the rest.

    The runtime has no hook for a service's own background loop, so this subclass adds one:
    the worker finishes its attempts in hand while the outbox relay can still publish them.
    """

    def __init__(self, settings: NotificationSettings) -> None:
        super().__init__(SPEC, settings)
        self.view: TenantConfigView | None = None
        self.worker: DeliveryWorker | None = None

    def start_worker(self, worker: DeliveryWorker) -> None:
        self.worker = worker
        self._spawn(worker.run(), "delivery worker")

    async def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            worker_tasks = [t for t in self._tasks if t.get_name().endswith("delivery worker")]
            with contextlib.suppress(Exception):
                for task in worker_tasks:
                    await task
        await super().shutdown()


async def build(settings: NotificationSettings) -> NotificationProcess:
    """Start storage, follow tenant configuration, and wire every part; the caller serves it."""
    service = NotificationProcess(settings)
    await service.start_storage()
    service.view = await service.follow_tenant_config()
    repo = Repository()
    status_topic = settings.topic(events.STATUS_TOPIC)
    logic = NotificationService(
        service.pool,
        repo,
        service.view,
        status_topic=status_topic,
        business_topic=settings.topic(events.BUSINESS_TOPIC),
        notify_from_address=settings.smtp_from_address,
    )
    await service.add_consumer(
        [events.INTERACTION_TOPIC, events.BUSINESS_TOPIC], events.handler(logic)
    )
    senders: dict[int, Sender] = {
        WEBHOOK: WebhookSender(settings.webhook_timeout_seconds),
        EMAIL: EmailSender(settings),
    }
    service.start_worker(
        DeliveryWorker(
            service.pool,
            repo,
            senders,
            status_topic=status_topic,
            policy=RetryPolicy(
                settings.retry_base_seconds, settings.retry_cap_seconds, settings.max_attempts
            ),
            batch_size=settings.worker_batch_size,
            poll_seconds=settings.worker_poll_seconds,
            lease_seconds=settings.sending_lease_seconds,
        )
    )
    service.add_grpc(
        rpc.add_NotificationServiceServicer_to_server,
        NotificationApi(logic),
        pb.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    )
    return service


async def serve(settings: NotificationSettings) -> None:
    await (await build(settings)).serve()
