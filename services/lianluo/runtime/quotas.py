"""A tenant's quotas: the plan's defaults, the tenant's overrides, and the per-second limits.

Rates are kept per replica, in memory, by a token bucket per tenant: a tenant over its rate is
refused at the entry of the call, before any work, so its burst costs the others nothing but
the refusal. Counts (concurrent interactions, agents) are checked by the service that owns
them, against its own tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from lianluo.runtime.auth import Limits
from lianluo.runtime.errors import ResourceExhausted
from lianluo.tenants.v1 import tenants_pb2 as pb

# The plans' defaults; docs/security.md lists them.
PLAN_LIMITS: dict[int, Limits] = {
    pb.PLAN_STARTER: Limits(
        max_concurrent_interactions=100,
        max_agents=50,
        api_calls_per_second=100,
        events_per_second=100,
    ),
    pb.PLAN_BUSINESS: Limits(
        max_concurrent_interactions=5_000,
        max_agents=1_000,
        api_calls_per_second=2_000,
        events_per_second=2_000,
    ),
    pb.PLAN_ENTERPRISE: Limits(
        max_concurrent_interactions=100_000,
        max_agents=20_000,
        api_calls_per_second=20_000,
        events_per_second=20_000,
    ),
}
MAX_QUOTA = 10_000_000


def of(tenant: pb.Tenant) -> Limits:
    """The tenant's quotas: its plan's, with each override that is set (not 0)."""
    limits = PLAN_LIMITS.get(tenant.plan, PLAN_LIMITS[pb.PLAN_STARTER])
    overrides = {
        f.name: getattr(tenant.quotas, f.name)
        for f in fields(Limits)
        if getattr(tenant.quotas, f.name, 0) > 0
    }
    return replace(limits, **overrides) if overrides else limits


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per (tenant, what): `rate` per second, a burst of one second's worth."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, tenant_id: str, what: str, rate: int) -> None:
        """Spend one unit, or raise ResourceExhausted naming `what` and when to retry."""
        if rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get((tenant_id, what))
        if bucket is None:
            bucket = self._buckets[(tenant_id, what)] = _Bucket(float(rate), now)
        bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1:
            raise ResourceExhausted(
                f"tenants/{tenant_id}",
                what,
                f"over the tenant's {what} quota ({rate})",
                retry_after=(1 - bucket.tokens) / rate,
            )
        bucket.tokens -= 1

    def forget(self, tenant_id: str) -> None:
        for key in [k for k in self._buckets if k[0] == tenant_id]:
            del self._buckets[key]
