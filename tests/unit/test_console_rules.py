"""The console's rules without I/O: the sealed session cookie, what a page may send, and what
each role is offered; and the wrap-up rule of the media service."""

from __future__ import annotations

import pytest

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.services.console import domain
from lianluo.services.media import domain as media_domain
from lianluo.tenants.v1 import tenants_pb2 as tpb

KEY = domain.cookie_key("a cell admin key of enough length")
SESSION = domain.Session(
    access="a.b.c",
    access_expires=1_000.0,
    refresh="r",
    user={"id": "u", "tenant_id": "t", "role": tpb.ROLE_AGENT, "agent_id": "a", "queues": []},
)


def test_a_session_cookie_opens_only_as_sealed_by_this_cell() -> None:
    sealed = domain.seal(SESSION, KEY)
    assert domain.unseal(sealed, KEY) == SESSION
    body, _, mac = sealed.rpartition(".")
    assert domain.unseal(body + "." + "0" * len(mac), KEY) is None
    assert domain.unseal(sealed, domain.cookie_key("another cell's admin key, as long")) is None
    assert domain.unseal("", KEY) is None and domain.unseal("not.a.cookie", KEY) is None
    assert SESSION.due(now=975.0) and not SESSION.due(now=900.0)


def test_each_role_is_offered_its_pages() -> None:
    assert domain.pages(tpb.ROLE_AGENT) == ("agent",)
    assert domain.pages(tpb.ROLE_SUPERVISOR) == ("supervisor", "reports")
    assert domain.pages(tpb.ROLE_TENANT_ADMIN) == ("supervisor", "reports", "admin")
    assert domain.pages(tpb.ROLE_UNSPECIFIED) == ()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"tenant", "name", "password"}),
        ({"tenant": " ", "name": "li", "password": "x"}, {"tenant"}),
        ({"tenant": "acme", "name": "x" * 300, "password": "x"}, {"name"}),
    ],
)
def test_a_sign_in_names_each_field_that_is_wrong(body: dict[str, str], fields: set[str]) -> None:
    with pytest.raises(domain.BadInput) as refused:
        domain.login_fields(body)
    assert set(refused.value.fields) == fields


def test_a_wrap_up_takes_a_known_disposition_and_a_short_note() -> None:
    assert domain.wrap_up({"disposition": "resolved", "note": "done"}) == ("resolved", "done")
    with pytest.raises(domain.BadInput) as refused:
        domain.wrap_up({"disposition": "whatever", "note": "x" * 3000})
    assert set(refused.value.fields) == {"disposition", "note"}


def test_a_page_follows_at_most_twenty_well_formed_conversations() -> None:
    iid = "0b9f3c4e-6a1d-4f3e-9d1c-2a5b6c7d8e9f"
    assert domain.followed(f"{iid}:7,bad:1,{iid[:-1]}x:2,") == {iid: (7, False)}
    assert domain.followed(f"{iid}:0:m") == {iid: (0, True)}
    assert domain.followed(f"{iid}:0:x") == {}
    many = ",".join(f"{iid[:-2]}{n:02d}:1" for n in range(30))
    assert len(domain.followed(many)) == 20


S = mpb.InteractionState
R = mpb.ParticipantRole


@pytest.mark.parametrize(
    ("state", "role", "code", "step"),
    [
        (S.INTERACTION_STATE_CONNECTED, R.PARTICIPANT_ROLE_CUSTOMER, "customer_left", "wrap_up"),
        (S.INTERACTION_STATE_CONNECTED, R.PARTICIPANT_ROLE_AGENT, "", "wrap_up"),
        (S.INTERACTION_STATE_CONNECTED, R.PARTICIPANT_ROLE_AGENT, "resolved", "end"),
        (S.INTERACTION_STATE_WRAP_UP, R.PARTICIPANT_ROLE_AGENT, "resolved", "end"),
        (S.INTERACTION_STATE_WRAP_UP, R.PARTICIPANT_ROLE_CUSTOMER, "", ""),
        (S.INTERACTION_STATE_QUEUED, R.PARTICIPANT_ROLE_CUSTOMER, "customer_left", "end"),
        (S.INTERACTION_STATE_CLOSED, R.PARTICIPANT_ROLE_AGENT, "resolved", ""),
    ],
)
def test_a_conversation_with_a_person_ends_in_the_agents_wrap_up(
    state: int, role: int, code: str, step: str
) -> None:
    it = mpb.Interaction(state=state)  # type: ignore[arg-type]
    ender = mpb.Participant(role=role)  # type: ignore[arg-type]
    assert media_domain.ending(it, ender, mpb.Resolution(code=code)) == step
    if state == S.INTERACTION_STATE_CONNECTED:
        # A key ending it (no participant) closes it at once.
        assert media_domain.ending(it, None, mpb.Resolution(code=code)) == "end"


def test_a_form_from_the_desk_names_each_field_that_is_wrong() -> None:
    made = domain.form_to_fill(
        {"title": "Verify", "fields": [{"name": "last4", "label": "Last 4", "type": "number"}]}
    )
    assert made.title == "Verify" and made.form_id.startswith("f-")
    assert [(f.name, f.type) for f in made.fields] == [("last4", mpb.FORM_FIELD_TYPE_NUMBER)]
    with pytest.raises(domain.BadInput) as refused:
        domain.form_to_fill(
            {"title": "", "fields": [{"name": "Bad Name"}, {"name": "ok", "type": "colour"}]}
        )
    assert set(refused.value.fields) == {
        "form.title",
        "form.fields[0].name",
        "form.fields[1].type",
    }


def test_a_place_from_the_desk_is_on_earth() -> None:
    content, _ = domain.message_content(
        {"id": "p1", "location": {"latitude": 31.23, "longitude": 121.47, "label": "Bund"}}
    )
    assert content.location.label == "Bund"
    with pytest.raises(domain.BadInput) as refused:
        domain.message_content({"id": "p2", "location": {"latitude": 91, "longitude": True}})
    assert set(refused.value.fields) == {"location.latitude", "location.longitude"}
