"""How an update with a field mask changes a stored resource, and what a response hides (tenants
service domain, no I/O)."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2
from tenant_examples import agent, queue, rule, tenant

from lianluo.common.v1 import common_pb2 as common
from lianluo.runtime.errors import InvalidArgument
from lianluo.services.tenants import domain
from lianluo.services.tenants.domain import (
    AGENT,
    FLOW,
    QUEUE,
    RULE,
    TEMPLATE,
    TENANT,
    Kind,
    apply_update,
    redact,
)
from lianluo.tenants.v1 import tenants_pb2 as pb

# ---------------------------------------------------------------- apply_update


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_masked_fields_are_replaced_and_the_rest_kept() -> None:
    stored = tenant()
    patch = pb.Tenant(display_name="Acme Bank Ltd", plan=pb.PLAN_ENTERPRISE)

    updated = apply_update(TENANT, stored, patch, mask("display_name"))

    expected = tenant()
    expected.display_name = "Acme Bank Ltd"
    assert updated == expected
    assert stored == tenant(), "the stored message itself must not change"


def test_a_masked_scalar_left_empty_in_the_patch_is_cleared() -> None:
    updated = apply_update(TENANT, tenant(), pb.Tenant(), mask("display_name"))

    assert updated.display_name == ""
    assert updated.plan == pb.PLAN_BUSINESS


def test_a_masked_repeated_field_is_replaced_not_appended() -> None:
    patch = pb.Tenant(channels=[common.CHANNEL_SMS])

    updated = apply_update(TENANT, tenant(), patch, mask("channels"))

    assert list(updated.channels) == [common.CHANNEL_SMS]


def test_masked_repeated_messages_and_maps_are_replaced_not_merged() -> None:
    patch = pb.Agent(
        skills=[common.SkillLevel(skill="loans", level=2)],
        attributes={"floor": "3"},
    )

    updated = apply_update(AGENT, agent(), patch, mask("skills", "attributes"))

    assert [(s.skill, s.level) for s in updated.skills] == [("loans", 2)]
    assert dict(updated.attributes) == {"floor": "3"}
    assert list(updated.languages) == ["en", "zh-CN"]


def test_a_masked_message_field_is_replaced_not_merged() -> None:
    patch = pb.Queue(service_level=pb.ServiceLevel(threshold_seconds=30))

    updated = apply_update(QUEUE, queue(), patch, mask("service_level"))

    assert updated.service_level == pb.ServiceLevel(threshold_seconds=30, target_percent=0)
    assert updated.priority == 5


def test_an_empty_mask_replaces_every_mutable_field_and_nothing_else() -> None:
    stored = tenant()
    stored.id = "0b6e8c1e-0000-4000-8000-000000000001"
    stored.state = pb.TENANT_STATE_ACTIVE
    stored.revision = 4
    patch = pb.Tenant(
        name="renamed",
        display_name="Renamed",
        plan=pb.PLAN_STARTER,
        expected_concurrent_sessions=7,
        channels=[common.CHANNEL_EMAIL],
        state=pb.TENANT_STATE_SUSPENDED,
        revision=99,
    )

    updated = apply_update(TENANT, stored, patch, mask())

    assert (updated.display_name, updated.plan, updated.expected_concurrent_sessions) == (
        "Renamed",
        pb.PLAN_STARTER,
        7,
    )
    assert list(updated.channels) == [common.CHANNEL_EMAIL]
    assert (updated.name, updated.id, updated.state, updated.revision) == (
        "acme-bank",
        stored.id,
        pb.TENANT_STATE_ACTIVE,
        4,
    )


def test_a_path_that_cannot_change_is_refused_by_its_position_in_the_mask() -> None:
    with pytest.raises(InvalidArgument) as raised:
        apply_update(TENANT, tenant(), tenant(), mask("display_name", "name", "nope"))

    assert [v.field for v in raised.value.violations] == [
        "update_mask.paths[1]",
        "update_mask.paths[2]",
    ]
    assert "'name' cannot be changed" in raised.value.message


@pytest.mark.parametrize(
    ("kind", "path"),
    [(AGENT, "name"), (QUEUE, "name"), (FLOW, "name"), (TEMPLATE, "name"), (RULE, "tenant_id")],
    ids=lambda v: getattr(v, "name", v),
)
def test_server_and_identity_fields_are_never_mutable(kind: Kind, path: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        apply_update(kind, kind.message(), kind.message(), mask(path))

    assert [v.field for v in raised.value.violations] == ["update_mask.paths[0]"]


def test_every_kinds_mutable_paths_exist_and_exclude_server_fields() -> None:
    for kind in domain.KINDS.values():
        names = {f.name for f in kind.message.DESCRIPTOR.fields}
        assert kind.mutable <= names, kind.name
        assert not kind.mutable & set(domain.SERVER_FIELDS), kind.name


def test_setting_email_replaces_a_stored_webhook() -> None:
    patch = pb.NotificationRule(email=pb.EmailTarget(from_address="ops@example.test"))

    updated = apply_update(RULE, rule(), patch, mask("email"))

    assert updated.WhichOneof("target") == "email"
    assert updated.email.from_address == "ops@example.test"
    assert not updated.HasField("webhook")


def test_a_masked_webhook_missing_from_the_patch_keeps_the_stored_webhook() -> None:
    updated = apply_update(RULE, rule(), pb.NotificationRule(enabled=False), mask("webhook"))

    assert updated.webhook == rule().webhook


def test_a_masked_webhook_in_the_patch_replaces_the_stored_one_whole() -> None:
    patch = pb.NotificationRule(webhook=pb.WebhookTarget(url="https://new.example.test"))

    updated = apply_update(RULE, rule(), patch, mask("webhook"))

    assert updated.webhook == pb.WebhookTarget(url="https://new.example.test")


def test_switching_the_trigger_replaces_the_stored_one() -> None:
    patch = pb.NotificationRule(
        schedule=pb.ScheduleTrigger(date_attribute="card_expiry", days_before=30)
    )

    updated = apply_update(RULE, rule(), patch, mask("schedule"))

    assert updated.WhichOneof("trigger") == "schedule"
    assert updated.schedule.days_before == 30


def test_an_empty_mask_on_a_rule_takes_the_patch_target_and_trigger() -> None:
    patch = rule()
    patch.ClearField("webhook")
    patch.email.from_address = "ops@example.test"
    patch.threshold.CopyFrom(
        pb.ThresholdTrigger(
            event_type="card_spend", metric="amount", operator=pb.THRESHOLD_OPERATOR_GREATER
        )
    )

    updated = apply_update(RULE, rule(), patch, mask())

    assert updated == patch


# ---------------------------------------------------------------- redact


def test_redact_hides_the_webhook_signing_secret_and_nothing_else() -> None:
    stored = rule()

    shown = redact(RULE, stored)

    expected = rule()
    expected.webhook.signing_secret = ""
    assert shown == expected
    assert stored.webhook.signing_secret == "s" * 32, "the stored rule keeps its secret"


def test_redact_leaves_an_email_rule_as_it_is() -> None:
    r = rule()
    r.email.from_address = "ops@example.test"

    assert redact(RULE, r) == r
    assert not redact(RULE, r).HasField("webhook")


def test_redact_leaves_kinds_without_secrets_as_they_are() -> None:
    assert redact(TENANT, tenant()) == tenant()
