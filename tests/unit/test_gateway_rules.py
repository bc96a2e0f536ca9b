"""The channel gateway's rules without I/O: the web chat's protocol, e-mail threads and
automatic mail, SMS encodings, segments and webhook signatures."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.services.gateway import domain


def test_only_listed_origins_open_the_chat() -> None:
    allowed = ["https://shop.example.com", "http://127.0.0.1:8088/"]
    assert domain.origin_allowed("https://shop.example.com", allowed)
    assert domain.origin_allowed("http://127.0.0.1:8088", allowed)
    assert not domain.origin_allowed("https://shop.example.com.evil.test", allowed)
    assert not domain.origin_allowed("", allowed)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"type": "message"}',
        b'{"type": "hello", "visitor": "someone-else"}',
        b'{"type": "hello", "after": -1}',
        b'{"type": "hello", "after": true}',
        b'{"type": "hello", "form": {"Bad Key": "x"}}',
    ],
)
def test_a_bad_hello_is_refused(raw: bytes) -> None:
    with pytest.raises(domain.BadMessage):
        domain.parse_hello(raw)


def test_a_browser_sees_its_own_messages_as_its_own_and_no_staff_notes() -> None:
    mine = mpb.ServerFrame(
        sequence=7,
        message=mpb.Message(
            id="m",
            sender_participant_id="c-1",
            client_message_id="w1",
            content=mpb.MessageContent(text="hi"),
        ),
    )
    assert domain.shown(mine, "c-1") == {
        "seq": 7,
        "type": "message",
        "id": "m",
        "from": "me",
        "text": "hi",
        "client_id": "w1",
    }
    note = mpb.ServerFrame(sequence=8, transfer=mpb.Transfer(note="VIP, be nice"))
    assert domain.shown(note, "c-1") is None


def _mail(headers: dict[str, str], body: str = "hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Mei <MEI@Example.com>"
    message["Message-ID"] = "<a@example.com>"
    for name, value in headers.items():
        message[name] = value
    message.set_content(body)
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize(
    ("headers", "automatic"),
    [
        ({}, False),
        ({"Auto-Submitted": "no"}, False),
        ({"Auto-Submitted": "auto-replied"}, True),
        ({"Precedence": "bulk"}, True),
        ({"X-Autoreply": "yes"}, True),
        ({"X-Lianluo-Interaction": "x"}, True),
    ],
)
def test_automatic_mail_is_recognised(headers: dict[str, str], automatic: bool) -> None:
    assert domain.is_automatic(_mail(headers)) is automatic


def test_a_mail_names_its_thread_nearest_first_and_its_sender() -> None:
    message = _mail({"In-Reply-To": "<c@x>", "References": "<a@x> <b@x> <c@x>"})
    assert domain.thread_ids(message) == ["<c@x>", "<b@x>", "<a@x>"]
    assert domain.sender(message) == ("mei@example.com", "Mei")
    assert domain.mail_text(message) == "hello"
    assert domain.reply_subject("Re: card") == "Re: card"
    assert domain.reply_subject("card") == "Re: card"


def test_sms_encoding_and_segments_follow_gsm_7_and_ucs_2() -> None:
    assert domain.sms_encoding("Hello @ £5") == "GSM-7"
    assert domain.sms_encoding("你好") == "UCS-2"
    assert domain.sms_segments("x" * 160) == 1
    assert domain.sms_segments("x" * 161) == 2
    assert domain.sms_segments("€" * 80) == 1  # an extension character takes two septets
    assert domain.sms_segments("€" * 81) == 2
    assert domain.sms_segments("你" * 70) == 1
    assert domain.sms_segments("你" * 71) == 2
    assert domain.sms_segments("😀" * 35) == 1  # a surrogate pair takes two code units


def test_a_long_reply_is_cut_between_characters_into_messages_of_ten_segments() -> None:
    text = "你" * 1000 + "😀" * 3
    parts = domain.sms_messages(text)
    assert "".join(parts) == text
    assert all(domain.sms_segments(p) <= domain.SEGMENTS_PER_MESSAGE for p in parts)
    assert [len(p) for p in parts][:1] == [670]


def test_a_webhook_signature_is_the_published_one() -> None:
    # The example of the provider's documentation.
    token = "12345"
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    assert domain.twilio_signature(token, url, params) == "GvWf1cFY/Q7PnoempGyD5oXAezc="
    assert domain.twilio_valid(token, url, params, "GvWf1cFY/Q7PnoempGyD5oXAezc=")
    assert not domain.twilio_valid(
        token, url, {**params, "Digits": "1235"}, "GvWf1cFY/Q7PnoempGyD5oXAezc="
    )
    assert not domain.twilio_valid(token, url, params, "")


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("STOP", "stop"),
        (" stop ", "stop"),
        ("Unsubscribe", "stop"),
        ("START", "start"),
        ("please stop calling", ""),
        ("stopped", ""),
    ],
)
def test_consent_keywords_are_whole_messages(text: str, keyword: str) -> None:
    assert domain.consent_keyword(text) == keyword


PNG_START = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kind", "data", "why"),
    [
        ("image/png", b"MZ\x90\x00", "not image/png"),
        ("image/webp", b"RIFF\x00\x00\x00\x00WAVE", "not image/webp"),
        ("application/x-msdownload", b"MZ", "is not one of"),
        ("", PNG_START, "no type is not one of"),
        ("text/plain", b"\xff\xfe", "not UTF-8"),
        ("image/png", b"", "empty"),
    ],
)
def test_a_file_is_taken_only_when_its_bytes_are_its_type(kind: str, data: bytes, why: str) -> None:
    with pytest.raises(domain.BadAttachment, match=why) as refused:
        domain.check_attachment(kind, data, 1024)
    assert not refused.value.too_large


def test_files_of_the_allowed_types_are_taken_up_to_the_limit() -> None:
    assert domain.check_attachment("IMAGE/PNG; charset=x", PNG_START + b"x", 1024) == "image/png"
    assert domain.check_attachment("text/plain", "你好".encode(), 1024) == "text/plain"
    with pytest.raises(domain.BadAttachment) as large:
        domain.check_attachment("image/png", PNG_START + bytes(1024), 1024)
    assert large.value.too_large


def test_a_file_name_loses_its_path_and_anything_unsafe() -> None:
    assert domain.attachment_name("../../etc/passwd") == "passwd"
    assert domain.attachment_name("C:\\Users\\mei\\收据.png") == "收据.png"
    assert domain.attachment_name('a"b<c>\r\n.png') == "a_b_c___.png"
    assert domain.attachment_name("...") == "file"


def _links(aid: str) -> str:
    return f"https://gw/a/{aid}?signed"


def _form_link(form: mpb.Form) -> str:
    return f"https://gw/f/{form.form_id}?signed"


AID = "0b9f3c4e-6a1d-4f3e-9d1c-2a5b6c7d8e9f"


def test_content_a_channel_cannot_show_is_fitted_to_it() -> None:
    image = mpb.MessageContent(
        image=mpb.Attachment(uri=f"attachment:{AID}", name="card.png", content_type="image/png")
    )
    assert domain.render(image, True, _links, _form_link) == domain.Rendered("[card.png]", AID)
    assert domain.render(image, False, _links, _form_link).text == f"card.png: {_links(AID)}"
    outside = mpb.MessageContent(file=mpb.Attachment(uri="https://cdn.example/a.pdf", name="a.pdf"))
    assert domain.render(outside, True, _links, _form_link) == domain.Rendered(
        "a.pdf: https://cdn.example/a.pdf"
    )
    where = mpb.MessageContent(
        location=mpb.Location(latitude=31.23, longitude=121.47, label="Bund")
    )
    text = domain.render(where, False, _links, _form_link).text
    assert text.startswith("Bund\nhttps://www.openstreetmap.org/?mlat=31.230000&mlon=121.470000")
    form = mpb.MessageContent(form=mpb.Form(form_id="v", title="Verify"))
    assert domain.render(form, True, _links, _form_link).text == "Verify: https://gw/f/v?signed"


def test_a_form_is_filled_only_with_answers_of_its_fields_types() -> None:
    T = mpb.FormFieldType
    form = mpb.Form(
        form_id="f",
        fields=[
            mpb.FormField(name="n", label="Number", type=T.FORM_FIELD_TYPE_NUMBER, required=True),
            mpb.FormField(name="d", type=T.FORM_FIELD_TYPE_DATE),
            mpb.FormField(name="e", type=T.FORM_FIELD_TYPE_EMAIL),
            mpb.FormField(name="c", type=T.FORM_FIELD_TYPE_CHOICE, options=["a", "b"]),
        ],
    )
    for answers, why in (
        ({}, "Number: is required"),
        ({"n": "x"}, "Number: a number"),
        ({"n": "1", "d": "31/01/2026"}, "d: a date"),
        ({"n": "1", "e": "mei@"}, "e: an e-mail address"),
        ({"n": "1", "c": "z"}, "c: one of the choices"),
    ):
        with pytest.raises(domain.BadForm, match=why):
            domain.fill_form(form, answers)
    filled = domain.fill_form(form, {"n": " 42 ", "d": "2026-01-31", "c": "b", "extra": "x"})
    assert filled.submitted and [f.value for f in filled.fields] == ["42", "2026-01-31", "", "b"]


def test_typing_and_read_receipts_of_the_others_are_shown_outside_the_timeline() -> None:
    typing = mpb.ServerFrame(typing=mpb.Typing(active=True, participant_id="a-1"))
    assert domain.shown(typing, "c-1") == {"type": "typing", "active": True}
    assert domain.shown(typing, "a-1") is None
    read = mpb.ServerFrame(read=mpb.Receipt(participant_id="a-1", sequence=7))
    assert domain.shown(read, "c-1") == {"type": "read", "upto": 7}
    assert domain.parse_said(b'{"type": "typing", "active": false}').active is False
    with pytest.raises(domain.BadMessage):
        domain.parse_said(b'{"type": "typing", "active": "yes"}')
