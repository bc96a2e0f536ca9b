"""When a notice may reach a customer (lianluo.domain.notices, and the notification service's
verdict on a notice about to go out): due times in the customer's zone, quiet hours, the daily
count and repeated texts. Pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lianluo.domain import notices
from lianluo.services.notification import domain
from lianluo.services.notification.deliveries import (
    EMAIL,
    FAILED,
    PENDING,
    SMS,
    WEBHOOK,
    Delivery,
)
from lianluo.tenants.v1 import tenants_pb2 as pb

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = notices.Quiet(21 * 60, 8 * 60)
NOTHING_LATELY = domain.Recent(0, None, None)


def test_a_date_is_due_at_the_send_time_on_the_local_clock_days_before() -> None:
    due = notices.due_time("2027-04-30", 30, "", SHANGHAI)
    assert due == datetime(2027, 3, 31, 9, 0, tzinfo=SHANGHAI).astimezone(UTC)
    assert notices.due_time("2027-04-30", 0, "18:30", SHANGHAI) == datetime(
        2027, 4, 30, 10, 30, tzinfo=UTC
    )


def test_a_date_across_daylight_saving_keeps_the_local_hour() -> None:
    # 30 days before 2027-04-10 is 2027-03-11, before New York's clocks go forward (03-14).
    due = notices.due_time("2027-04-10", 30, "09:00", NEW_YORK)
    assert due == datetime(2027, 3, 11, 14, 0, tzinfo=UTC)
    due = notices.due_time("2027-04-20", 30, "09:00", NEW_YORK)
    assert due == datetime(2027, 3, 21, 13, 0, tzinfo=UTC)


def test_a_time_with_its_offset_is_due_that_instant_days_before() -> None:
    due = notices.due_time("2027-04-30T18:00:00+08:00", 30, "09:00", NEW_YORK)
    assert due == datetime(2027, 3, 31, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", ["", "soon", "2027-02-30", "2027-04-30T18:00:00", "30/04/2027"])
def test_what_is_not_a_date_or_a_time_with_an_offset_is_not_due(value: str) -> None:
    assert notices.due_time(value, 30, "09:00", SHANGHAI) is None


def test_quiet_hours_across_midnight_end_the_next_morning() -> None:
    late = datetime(2027, 4, 2, 23, 0, tzinfo=SHANGHAI)
    morning = datetime(2027, 4, 3, 8, 0, tzinfo=SHANGHAI)
    assert notices.quiet_until(late, SHANGHAI, NIGHT) == morning.astimezone(UTC)
    early = datetime(2027, 4, 3, 6, 59, tzinfo=SHANGHAI)
    assert notices.quiet_until(early, SHANGHAI, NIGHT) == morning.astimezone(UTC)
    for awake in (
        datetime(2027, 4, 3, 8, 0, tzinfo=SHANGHAI),
        late - timedelta(hours=2, seconds=1),
    ):
        assert notices.quiet_until(awake, SHANGHAI, NIGHT) is None


def test_quiet_hours_within_a_day_end_that_day() -> None:
    lunch = notices.Quiet(12 * 60, 13 * 60 + 30)
    at = datetime(2027, 4, 3, 12, 15, tzinfo=SHANGHAI)
    end = datetime(2027, 4, 3, 13, 30, tzinfo=SHANGHAI)
    assert notices.quiet_until(at, SHANGHAI, lunch) == end.astimezone(UTC)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(0, 1439),
    st.integers(0, 1439),
)
def test_the_end_of_quiet_hours_is_never_in_them_and_never_before_now(
    naive: datetime, start: int, end: int
) -> None:
    if start == end:
        return
    quiet, now = notices.Quiet(start, end), naive.replace(tzinfo=UTC)
    until = notices.quiet_until(now, NEW_YORK, quiet)
    if until is not None:
        assert until > now
        assert until - now <= timedelta(hours=25)
        assert notices.quiet_until(until, NEW_YORK, quiet) is None


def test_a_customers_own_quiet_hours_are_read_and_bad_ones_ignored() -> None:
    assert notices.parse_quiet("22:30-07:00") == notices.Quiet(22 * 60 + 30, 7 * 60)
    for bad in ("", "22:30", "25:00-07:00", "07:00-07:00", "late-early"):
        assert notices.parse_quiet(bad) is None


def test_a_policy_names_each_bad_field() -> None:
    policy = pb.NoticePolicy(
        time_zone="Mars/Olympus",
        quiet_hours=pb.QuietHours(start="21:00", end="8am"),
        max_per_customer_per_day=-1,
        dedupe_hours=24 * 31,
    )
    assert [path for path, _ in notices.problems(policy, "tenant.notices")] == [
        "tenant.notices.time_zone",
        "tenant.notices.quiet_hours.end",
        "tenant.notices.max_per_customer_per_day",
        "tenant.notices.dedupe_hours",
    ]
    assert notices.problems(pb.NoticePolicy(), "tenant.notices") == []


def text(channel: int = SMS, **overrides: object) -> Delivery:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "tenant_id": "t",
        "template": "card-expiry",
        "channel": channel,
        "body": "Card 4242 expires soon.",
        "created_at": datetime(2027, 4, 1, tzinfo=UTC),
        "phone_number": "+8613800138000",
        "attempts": 1,
    }
    values.update(overrides)
    return Delivery(**values)  # type: ignore[arg-type]


def tenant(**fields: object) -> notices.Limits:
    return notices.limits(pb.NoticePolicy(**fields))  # type: ignore[arg-type]


SHANGHAI_NIGHTS = {
    "time_zone": "Asia/Shanghai",
    "quiet_hours": pb.QuietHours(start="21:00", end="08:00"),
}


def test_a_notice_in_the_customers_quiet_hours_waits_for_their_end() -> None:
    at = datetime(2027, 4, 2, 23, 0, tzinfo=SHANGHAI)
    verdict = domain.verdict(text(), tenant(**SHANGHAI_NIGHTS), NOTHING_LATELY, at)
    assert verdict.hold_until == datetime(2027, 4, 3, 8, 0, tzinfo=SHANGHAI)
    # A customer in New York is awake at that moment (11:00 there).
    abroad = text(time_zone="America/New_York")
    assert domain.verdict(abroad, tenant(**SHANGHAI_NIGHTS), NOTHING_LATELY, at) == domain.SEND
    # Their own quiet hours come first.
    own = text(time_zone="America/New_York", quiet_hours="10:00-12:00")
    held = domain.verdict(own, tenant(**SHANGHAI_NIGHTS), NOTHING_LATELY, at)
    assert held.hold_until == datetime(2027, 4, 2, 12, 0, tzinfo=NEW_YORK)


def test_a_webhook_goes_to_the_tenant_at_any_hour() -> None:
    at = datetime(2027, 4, 2, 23, 0, tzinfo=SHANGHAI)
    hook = text(WEBHOOK, phone_number="")
    assert domain.verdict(hook, tenant(**SHANGHAI_NIGHTS), NOTHING_LATELY, at) == domain.SEND


def test_over_the_daily_count_a_notice_waits_a_day_from_the_oldest() -> None:
    now = datetime(2027, 4, 2, 12, 0, tzinfo=UTC)
    oldest = now - timedelta(hours=20)
    verdict = domain.verdict(
        text(EMAIL, email_address="mei@example.test"),
        tenant(max_per_customer_per_day=3),
        domain.Recent(3, oldest, None),
        now,
    )
    assert verdict.hold_until == oldest + timedelta(days=1)
    under = domain.verdict(
        text(), tenant(max_per_customer_per_day=3), domain.Recent(2, oldest, None), now
    )
    assert under == domain.SEND


def test_a_text_the_customer_just_got_is_not_sent_again_but_a_retry_is() -> None:
    now = datetime(2027, 4, 2, 12, 0, tzinfo=UTC)
    lately = domain.Recent(1, now - timedelta(hours=1), now - timedelta(hours=1))
    refused = domain.verdict(text(), tenant(), lately, now)
    assert "same text" in refused.refused
    assert domain.verdict(text(attempts=2), tenant(), lately, now) == domain.SEND


def test_a_text_longer_than_the_gateway_takes_is_recorded_failed_when_it_fires() -> None:
    rule = pb.NotificationRule(
        name="card-expiry",
        schedule=pb.ScheduleTrigger(date_attribute="card_expiry", days_before=30),
        template="card-expiry",
        sms=pb.SmsTarget(),
        enabled=True,
    )
    now = datetime(2027, 4, 2, 12, 0, tzinfo=UTC)

    def fired(body: str) -> Delivery:
        return domain.rule_delivery(
            rule=rule,
            template=pb.NotificationTemplate(
                name="card-expiry", channel=pb.DELIVERY_CHANNEL_SMS, body=body
            ),
            tenant_id=str(uuid.uuid4()),
            source_key="event-1",
            source_event_id="event-1",
            customer=domain.Customer(id="c-1", phone="+8613800138000"),
            context={},
            details={},
            now=now,
        ).delivery

    # 3,000 Chinese characters are 9,000 bytes: over the 4,000 a text may be.
    long = fired("卡" * 3000)
    assert long.status == FAILED
    assert "body" in long.last_error and "4,000" in long.last_error
    assert fired("Your card expires soon.").status == PENDING
