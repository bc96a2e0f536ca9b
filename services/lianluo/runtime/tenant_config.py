"""A local, read-only copy of every tenant's configuration, followed from `tenant.config`.

Services other than tenants learn agents, queues, flows, templates, rules and API keys here,
never from the tenants service's schema. The topic is compacted and keyed per resource, so
reading it from the start rebuilds the whole configuration; the view is ready once it has read
up to the end offsets it saw at start-up, and then follows new changes.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError, Message

from lianluo.events.v1 import envelope_pb2, tenant_config_pb2
from lianluo.runtime import auth, tokens
from lianluo.runtime.kafka import FETCH_MAX_WAIT_MS, behind, client_security
from lianluo.runtime.logs import get_logger
from lianluo.tenants.v1 import tenants_pb2 as pb

if TYPE_CHECKING:
    from lianluo.runtime.settings import KafkaSecuritySettings

log = get_logger(__name__)
Change = tenant_config_pb2.TenantConfigChanged
Listener = Callable[[str, Change], None]
# The changes that can end a credential: a key, the tenant's state, a signing key, a person.
CREDENTIAL_KINDS = frozenset({"api_key", "tenant", "signing_key", "user"})


class TenantConfigView:
    """Every tenant's configuration in memory, and the KeyResolver built from it."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        fetch_wait_ms: int = FETCH_MAX_WAIT_MS,
        *,
        security: KafkaSecuritySettings | None = None,
    ) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            **client_security(security),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_wait_ms,
        )
        # tenant id -> kind -> resource id -> message
        self._resources: dict[str, dict[str, dict[str, Any]]] = {}
        self._keys: dict[str, tenant_config_pb2.ApiKeyState] = {}
        self._listeners: list[Listener] = []
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        """Read the topic from its beginning up to its current end."""
        await self._consumer.start()
        partitions = [
            TopicPartition(self._topic, p)
            for p in sorted(self._consumer.partitions_for_topic(self._topic) or [])
        ]
        if not partitions:
            raise RuntimeError(f"topic {self._topic} does not exist")
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        end = await self._consumer.end_offsets(partitions)
        while await behind(self._consumer, end):
            await self._poll()
        log.info("tenant configuration loaded", tenants=len(self._resources), keys=len(self._keys))

    async def run(self) -> None:
        """Follow new changes until stop()."""
        try:
            while not self._stopping.is_set():
                await self._poll()
        finally:
            await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(tenant_id, change)` after every change is applied."""
        self._listeners.append(listener)

    async def _poll(self) -> None:
        batches = await self._consumer.getmany(timeout_ms=300, max_records=1000)
        if not batches:
            return
        for records in batches.values():
            for record in records:
                self._apply_record(record.value or b"")
        async with self._changed:
            self._changed.notify_all()

    def _apply_record(self, value: bytes) -> None:
        try:
            envelope = envelope_pb2.Envelope.FromString(value)
            change = Change()
            if not envelope.payload.Unpack(change):
                return
        except DecodeError:
            log.error("not a tenant.config change; skipped")
            return
        self.apply(envelope.tenant_id, change)

    def apply(self, tenant_id: str, change: Change) -> None:
        """Apply one change (public so unit tests can drive the view without a broker)."""
        if change.kind == "api_key":
            if change.deleted:
                self._keys.pop(change.resource_id, None)
            else:
                self._keys[change.resource_id] = change.api_key
        elif change.kind == "tenant" and change.deleted:
            self._resources.pop(tenant_id, None)
        else:
            kinds = self._resources.setdefault(tenant_id, {})
            if change.deleted:
                kinds.get(change.kind, {}).pop(change.resource_id, None)
            else:
                resource: Message = getattr(change, change.kind)
                kinds.setdefault(change.kind, {})[change.resource_id] = resource
        for listener in self._listeners:
            try:
                listener(tenant_id, change)
            except Exception:  # a listener's bug must not stop the view
                log.exception("tenant config listener failed")

    # ------------------------------------------------------------------ queries

    def tenant(self, tenant_id: str) -> pb.Tenant | None:
        found = self._resources.get(tenant_id, {}).get("tenant", {}).get(tenant_id)
        return found if isinstance(found, pb.Tenant) else None

    def get(self, tenant_id: str, kind: str, resource_id: str) -> Any | None:
        return self._resources.get(tenant_id, {}).get(kind, {}).get(resource_id)

    def all(self, tenant_id: str, kind: str) -> list[Any]:
        return list(self._resources.get(tenant_id, {}).get(kind, {}).values())

    def by_name(self, tenant_id: str, kind: str, name: str) -> Any | None:
        return next((r for r in self.all(tenant_id, kind) if r.name == name), None)

    def tenant_ids(self) -> list[str]:
        return list(self._resources)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds after some change (bound it with a timeout)."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    # ------------------------------------------------------------------ Credentials

    async def resolve(self, key_id: str, secret_sha256: str) -> auth.Principal | None:
        state = self._keys.get(key_id)
        if state is None or state.api_key.HasField("revoke_time"):
            return None
        if state.api_key.HasField("expire_time") and state.api_key.expire_time.ToDatetime(
            UTC
        ) <= datetime.now(UTC):
            return None
        if not hmac.compare_digest(state.secret_sha256, secret_sha256):
            return None
        tenant_id = state.api_key.tenant_id
        if not tenant_id:
            return auth.Principal(key_id=key_id, tenant_id=None)
        narrowed = frozenset(state.api_key.permissions) or None
        return tokens.of_tenant(self.tenant(tenant_id), key_id=key_id, permissions=narrowed)

    async def lookup_tenant(self, tenant_id: str) -> pb.Tenant | None:
        return self.tenant(tenant_id)

    async def signing_key(self, tenant_id: str, kid: str) -> tokens.SigningKey | None:
        found = self.get(tenant_id, "signing_key", kid)
        if not isinstance(found, tenant_config_pb2.SigningKey):
            return None
        retire = found.retire_time.ToDatetime(UTC) if found.HasField("retire_time") else None
        return tokens.SigningKey(found.kid, found.jwk, retire)

    async def user(self, tenant_id: str, user_id: str) -> pb.User | None:
        found = self.get(tenant_id, "user", user_id)
        return found if isinstance(found, pb.User) else None
