"""People, tokens and quotas as pure rules (no I/O): who may use which interaction, what a
token proves, and how a tenant's rate is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.rpc import error_details_pb2

from lianluo.common.v1 import common_pb2 as common
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime import auth, quotas, tokens
from lianluo.runtime.errors import ResourceExhausted, Unauthenticated, to_rpc_status
from lianluo.services.media import domain
from lianluo.tenants.v1 import tenants_pb2 as pb

P = mpb.ParticipantRole
LI = auth.Principal("", "t", role=auth.AGENT, user_id="u-li", agent_id="li")
ANA = auth.Principal("", "t", role=auth.AGENT, user_id="u-ana", agent_id="ana")
WATCHES_CARDS = auth.Principal(
    "", "t", role=auth.SUPERVISOR, user_id="s", queues=frozenset({"cards"})
)
KEY = auth.Principal("k", "t")


def _interaction() -> mpb.Interaction:
    return mpb.Interaction(
        id="i-1",
        tenant_id="t",
        channel=common.CHANNEL_WEB,
        queue="cards",
        customer=mpb.Customer(id="mei"),
        participants=[
            mpb.Participant(id="c-1", role=P.PARTICIPANT_ROLE_CUSTOMER, subject_id="mei"),
            mpb.Participant(id="a-1", role=P.PARTICIPANT_ROLE_AGENT, subject_id="li"),
        ],
    )


def test_an_agent_uses_only_the_interactions_they_are_in_and_only_as_themselves() -> None:
    it = _interaction()
    customer, li = it.participants
    assert domain.may_use(LI, it) and domain.may_use(LI, it, li)
    assert not domain.may_use(LI, it, customer)
    assert not domain.may_use(ANA, it)
    assert domain.may_use(KEY, it, customer), "a key acts for any participant of its tenant"


def test_a_customer_session_is_bound_to_its_interaction_or_its_customer_on_a_channel() -> None:
    it = _interaction()
    customer, li = it.participants
    bound = auth.Principal("", "t", role=auth.CUSTOMER, interaction_id="i-1")
    assert domain.may_use(bound, it, customer) and not domain.may_use(bound, it, li)
    other = mpb.Interaction()
    other.CopyFrom(it)
    other.id = "i-2"
    assert not domain.may_use(bound, other)
    mei_web = auth.Principal(
        "", "t", role=auth.CUSTOMER, customer_id="mei", channel=common.CHANNEL_WEB
    )
    assert domain.may_use(mei_web, other)
    other.channel = common.CHANNEL_APP
    assert not domain.may_use(mei_web, other), "the channel is part of the binding"
    assert domain.may_start(mei_web, "mei", common.CHANNEL_WEB)
    assert not domain.may_start(mei_web, "someone", common.CHANNEL_WEB)
    assert not domain.may_start(bound, "mei", common.CHANNEL_WEB)
    assert not domain.may_start(LI, "mei", common.CHANNEL_WEB)


def test_a_supervisor_watches_their_queues_and_joins_as_themselves() -> None:
    it = _interaction()
    assert domain.may_use(WATCHES_CARDS, it)
    it.queue = "loans"
    assert not domain.may_use(WATCHES_CARDS, it)
    as_self = mpb.Join(role=P.PARTICIPANT_ROLE_SUPERVISOR, subject_id="s")
    as_agent = mpb.Join(role=P.PARTICIPANT_ROLE_AGENT, subject_id="li")
    assert domain.may_join_as(WATCHES_CARDS, as_self)
    assert not domain.may_join_as(WATCHES_CARDS, as_agent)
    assert domain.may_join_as(LI, as_agent) and not domain.may_join_as(ANA, as_agent)


def test_roles_grant_what_the_table_says_and_never_the_platform() -> None:
    boss = auth.Principal("", "t", permissions=None, role=auth.TENANT_ADMIN)
    assert boss.may("recording:read") and not boss.may(auth.PLATFORM)
    li = auth.Principal("", "t", permissions=auth.ROLE_PERMISSIONS[auth.AGENT], role=auth.AGENT)
    assert li.may("routing:agent") and not li.may("recording:read")
    assert not li.may("config:read")
    assert KEY.grants(auth.ROLE_PERMISSIONS[auth.TENANT_ADMIN])
    assert not li.grants(auth.ROLE_PERMISSIONS[auth.TENANT_ADMIN])


# ---------------------------------------------------------------------- tokens


class _Source:
    def __init__(self, key: tokens.SigningKey, user: pb.User) -> None:
        self.key, self.found = key, user
        self.t = pb.Tenant(id="t", plan=pb.PLAN_STARTER, state=pb.TENANT_STATE_ACTIVE)

    async def lookup_tenant(self, tenant_id: str) -> pb.Tenant | None:
        return self.t if tenant_id == "t" else None

    async def signing_key(self, tenant_id: str, kid: str) -> tokens.SigningKey | None:
        return self.key if kid == self.key.kid else None

    async def user(self, tenant_id: str, user_id: str) -> pb.User | None:
        return self.found if user_id == self.found.id else None


async def test_a_token_names_its_person_until_their_sessions_end() -> None:
    key = tokens.new_signing_key()
    li = pb.User(id="u-li", role=pb.ROLE_AGENT, agent_id="li")
    source = _Source(key, li)
    now = datetime.now(UTC)
    token, expires = tokens.mint(key, "t", tokens.PERSON, "u-li", timedelta(minutes=5), now)
    assert expires - now == timedelta(minutes=5)
    who = await tokens.authenticate(token, source)
    assert who is not None and (who.role, who.agent_id, who.tenant_id) == (auth.AGENT, "li", "t")
    assert who.limits == quotas.PLAN_LIMITS[pb.PLAN_STARTER]
    li.sessions_end_time.FromDatetime(now + timedelta(milliseconds=10))
    assert await tokens.authenticate(token, source) is None, "issued before the sessions ended"
    li.ClearField("sessions_end_time")
    li.disabled = True
    assert await tokens.authenticate(token, source) is None


async def test_a_token_is_refused_when_expired_or_signed_by_another_key() -> None:
    key = tokens.new_signing_key()
    source = _Source(key, pb.User(id="u", role=pb.ROLE_TENANT_ADMIN))
    old = datetime.now(UTC) - timedelta(hours=1)
    expired, _ = tokens.mint(key, "t", tokens.PERSON, "u", timedelta(minutes=5), old)
    with pytest.raises(Unauthenticated, match="expired"):
        await tokens.authenticate(expired, source)
    impostor = tokens.SigningKey(key.kid, key.jwk, None, tokens.new_signing_key().private_pem)
    forged, _ = tokens.mint(
        impostor, "t", tokens.PERSON, "u", timedelta(minutes=5), datetime.now(UTC)
    )
    with pytest.raises(Unauthenticated, match="not valid"):
        await tokens.authenticate(forged, source)
    retired = tokens.SigningKey(key.kid, key.jwk, datetime.now(UTC), key.private_pem)
    fresh, _ = tokens.mint(key, "t", tokens.PERSON, "u", timedelta(minutes=5), datetime.now(UTC))
    assert await tokens.authenticate(fresh, _Source(retired, source.found)) is None


def test_a_jwks_holds_the_public_halves_of_the_keys_that_still_verify() -> None:
    live, gone = tokens.new_signing_key(), tokens.new_signing_key()
    gone = tokens.SigningKey(gone.kid, gone.jwk, datetime.now(UTC) - timedelta(seconds=1))
    published = tokens.jwks([live, gone], datetime.now(UTC))
    assert live.kid in published and gone.kid not in published
    assert '"d"' not in published


# ---------------------------------------------------------------------- quotas


def test_a_tenants_quotas_are_its_plans_with_its_overrides() -> None:
    t = pb.Tenant(plan=pb.PLAN_BUSINESS, quotas=pb.Quotas(api_calls_per_second=7))
    limits = quotas.of(t)
    assert limits.api_calls_per_second == 7
    assert limits.max_agents == quotas.PLAN_LIMITS[pb.PLAN_BUSINESS].max_agents


def test_the_rate_limiter_allows_a_seconds_burst_then_the_rate_per_tenant() -> None:
    now = [100.0]
    limiter = quotas.RateLimiter(clock=lambda: now[0])
    allowed = 0
    for _ in range(15):
        try:
            limiter.take("noisy", "api_calls_per_second", 10)
            allowed += 1
        except ResourceExhausted as error:
            refused = error
    assert allowed == 10
    limiter.take("calm", "api_calls_per_second", 10)  # another tenant's bucket is untouched
    now[0] += 0.5
    allowed_later = 0
    for _ in range(10):
        try:
            limiter.take("noisy", "api_calls_per_second", 10)
            allowed_later += 1
        except ResourceExhausted:
            pass
    assert allowed_later == 5
    status = to_rpc_status(refused)
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 0.1
