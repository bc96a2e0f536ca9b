"""The channels' rules, without I/O. For the web chat: which pages may open it, what a browser
may send, and what it is shown of the interaction's timeline. For e-mail: which mail no person
wrote, how a message names its thread, and what its text is.

The browser speaks JSON over one WebSocket. It sends `hello` first, then `message`, `read`,
`typing` and `leave` (files go up over HTTP, to the signed `upload` path `welcome` gives); it is
sent `welcome`, then one object per item of the timeline, each with its sequence number
(`seq`), and, outside the timeline, the others' `typing` and `read` (up to a `seq`). After a
reconnect the browser says the last `seq` it saw, and the gateway replays what came after:
nothing is lost, and a browser that drops items it has seen (by `seq`) shows nothing twice.

Attachments and media fusion are rules here too: which files are taken, and how a message a
text channel cannot show (a location, an image, a form) becomes one it can.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from lianluo.events.v1 import notification_pb2 as notification_events
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.errors import Violations

R = mpb.ParticipantRole
MAX_TEXT = 4000
CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
VISITOR = re.compile(r"^v-[0-9a-f]{32}$")
# A pre-chat form's field names, as the media service takes them as collected data.
FORM_FIELD = re.compile(r"[a-z][a-z0-9_]{0,39}")
ROLES = {
    R.PARTICIPANT_ROLE_CUSTOMER: "customer",
    R.PARTICIPANT_ROLE_AGENT: "agent",
    R.PARTICIPANT_ROLE_EXPERT: "agent",
    R.PARTICIPANT_ROLE_BOT: "bot",
    R.PARTICIPANT_ROLE_SUPERVISOR: "supervisor",
}


class BadMessage(ValueError):
    """A browser's message the gateway refuses; the socket is closed with its reason."""


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """The page's origin, exactly as the browser sends it, must be one the channel lists."""
    return bool(origin) and origin.rstrip("/") in {a.rstrip("/") for a in allowed}


@dataclass(frozen=True)
class Hello:
    # The visitor id the widget keeps; empty for a first visit.
    visitor: str
    # The interaction to resume, and the last sequence number seen in it.
    interaction: str
    after: int
    name: str
    # Pre-chat form answers: kept on the customer for self-service and the agent.
    form: dict[str, str]


def _object(raw: str | bytes) -> dict[str, Any]:
    try:
        found = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadMessage("not JSON") from error
    if not isinstance(found, dict):
        raise BadMessage("not a JSON object")
    return found


def _text(found: dict[str, Any], key: str, limit: int) -> str:
    value = found.get(key, "")
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise BadMessage(f"{key}: a string of at most {limit} characters")
    return value


def parse_hello(raw: str | bytes) -> Hello:
    found = _object(raw)
    if found.get("type") != "hello":
        raise BadMessage("the first message must be hello")
    visitor = _text(found, "visitor", 40)
    if visitor and not VISITOR.fullmatch(visitor):
        raise BadMessage("visitor: not a visitor id this gateway gave")
    interaction = _text(found, "interaction", 36)
    after = found.get("after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**62:
        raise BadMessage("after: a sequence number")
    form = found.get("form", {})
    if not isinstance(form, dict) or len(form) > 20:
        raise BadMessage("form: at most 20 fields")
    fields: dict[str, str] = {}
    for key in form:
        if not FORM_FIELD.fullmatch(str(key)):
            raise BadMessage("form: field names are a-z, 0-9 and _")
        fields[str(key)] = _text(form, key, 500)
    return Hello(visitor, interaction, after, _text(found, "name", 120), fields)


@dataclass(frozen=True)
class Said:
    """What the browser sent after hello."""

    kind: str  # "message", "read", "typing" or "leave"
    text: str = ""
    client_id: str = ""
    seq: int = 0
    active: bool = False


def parse_said(raw: str | bytes) -> Said:
    found = _object(raw)
    kind = found.get("type")
    if kind == "message":
        client_id = _text(found, "id", 64)
        if not CLIENT_ID.fullmatch(client_id):
            raise BadMessage("id: 1 to 64 of A-Z a-z 0-9 _ . : -")
        text = _text(found, "text", MAX_TEXT)
        if not text.strip():
            raise BadMessage("text: empty")
        return Said("message", text=text, client_id=client_id)
    if kind == "read":
        seq = found.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**62:
            raise BadMessage("seq: a sequence number")
        return Said("read", seq=seq)
    if kind == "typing":
        active = found.get("active")
        if not isinstance(active, bool):
            raise BadMessage("active: true or false")
        return Said("typing", active=active)
    if kind == "leave":
        return Said("leave")
    raise BadMessage("type: one of message, read, typing, leave")


def parse_rating(raw: bytes) -> tuple[int, str]:
    """A rating the widget sends: {"score": 1 to 5, "comment": at most 500 characters}."""
    found = _object(raw)
    score = found.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise BadMessage("score: 1 to 5")
    return score, _text(found, "comment", 500)


def shown(
    frame: mpb.ServerFrame,
    me: str,
    link: Callable[[str], str] = lambda _: "",
    form_link: Callable[[str], str] = lambda _: "",
) -> dict[str, Any] | None:
    """What the browser is shown of one timeline item (None: nothing, such as staff notes).
    `link` gives a stored attachment's signed link, by its id; `form_link` the signed link to
    fill a form, by its message's id."""
    kind = frame.WhichOneof("frame")
    base: dict[str, Any] = {"seq": frame.sequence}
    if kind == "message":
        m = frame.message
        item = base | {
            "type": "message",
            "id": m.id,
            "from": "me" if m.sender_participant_id == me else ROLES.get(m.sender_role, "agent"),
            "text": m.content.text,
            "client_id": m.client_message_id if m.sender_participant_id == me else "",
        }
        what = m.content.WhichOneof("content")
        if what in ("image", "file"):
            a = m.content.image if what == "image" else m.content.file
            stored = attachment_id(a.uri)
            item["attachment"] = {
                "kind": what,
                "name": a.name,
                "type": a.content_type,
                "size": a.size_bytes,
                "url": link(stored) if stored else a.uri,
            }
        elif what == "location":
            item["text"] = place_text(m.content.location)
        elif what == "form" and not m.content.form.submitted:
            item["form"] = {"title": m.content.form.title, "url": form_link(m.id)}
        elif what == "form":
            item["text"] = "\n".join(
                f"{f.label or f.name}: {f.value}" for f in m.content.form.fields
            )
        return item
    if kind == "prompt":
        choices = [{"digit": c.digit, "label": c.label} for c in frame.prompt.choices]
        return base | {"type": "prompt", "text": frame.prompt.text, "choices": choices}
    if kind == "state_changed":
        state = mpb.InteractionState.Name(frame.state_changed.to_state)
        return base | {"type": "state", "state": state.removeprefix("INTERACTION_STATE_").lower()}
    if kind == "participant_joined":
        p = frame.participant_joined
        if p.id == me or p.role == R.PARTICIPANT_ROLE_BOT:
            return None
        return base | {"type": "joined", "role": ROLES.get(p.role, "agent"), "name": p.display_name}
    if kind == "ended":
        return base | {"type": "ended", "resolution": frame.ended.resolution.code}
    # Outside the timeline (no seq): the others' typing and read receipts.
    if kind == "typing" and frame.typing.participant_id != me:
        return {"type": "typing", "active": frame.typing.active}
    if kind == "read" and frame.read.participant_id != me:
        return {"type": "read", "upto": frame.read.sequence}
    return None


# ---------------------------------------------------------------------- e-mail

MAX_MAIL_TEXT = 9_000
_REFERENCE = re.compile(r"<[^<>\s]{1,250}>")
_TAGS = re.compile(r"<[^>]*>")


class BadMail(ValueError):
    """A message the gateway refuses in the SMTP dialogue (550), naming what is wrong."""


def is_automatic(message: EmailMessage) -> bool:
    """Mail no person wrote (RFC 3834 and the common conventions): answering it could loop."""
    submitted = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    return (
        submitted != "no"
        or precedence in {"bulk", "junk", "list", "auto_reply"}
        or "X-Autoreply" in message
        or "X-Autorespond" in message
        or str(message.get("Return-Path", "")).strip() == "<>"
        or "X-Lianluo-Interaction" in message  # one of ours, come back
    )


def message_id(message: EmailMessage) -> str:
    found: list[str] = _REFERENCE.findall(str(message.get("Message-ID", "")))
    if not found:
        raise BadMail("no Message-ID")
    return found[0]


def thread_ids(message: EmailMessage) -> list[str]:
    """The Message-IDs this one answers, nearest first (In-Reply-To, then References)."""
    replied = _REFERENCE.findall(str(message.get("In-Reply-To", "")))
    referenced = _REFERENCE.findall(str(message.get("References", "")))
    seen: list[str] = []
    for ref in [*replied, *reversed(referenced)]:
        if ref not in seen:
            seen.append(ref)
    return seen[:50]


def sender(message: EmailMessage) -> tuple[str, str]:
    """The sender's address (lower case) and name."""
    name, address = parseaddr(str(message.get("From", "")))
    address = address.strip().lower()
    if "@" not in address or len(address) > 254 or any(c.isspace() for c in address):
        raise BadMail("no sender address in From")
    return address, name.strip()[:120]


@dataclass(frozen=True)
class MailFile:
    name: str
    content_type: str
    data: bytes


MAX_MAIL_FILES = 10


def mail_files(message: EmailMessage) -> list[MailFile]:
    """The message's attachments (inline images included), at most MAX_MAIL_FILES."""
    found = []
    for part in message.iter_attachments():
        if not isinstance(part, EmailMessage) or part.is_multipart():
            continue
        try:
            data = part.get_payload(decode=True)
        except (LookupError, ValueError) as error:
            raise BadMail("an attachment that does not decode") from error
        if not isinstance(data, bytes):
            continue
        found.append(MailFile(part.get_filename() or "file", part.get_content_type(), data))
    if len(found) > MAX_MAIL_FILES:
        raise BadMail(f"more than {MAX_MAIL_FILES} attachments")
    return found


def mail_text(message: EmailMessage, has_files: bool = False) -> str:
    """What the customer wrote: the plain-text part, else the HTML part without its tags.
    A message of attachments only may have no text."""
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        if has_files:
            return ""
        raise BadMail("no text in the message")
    try:
        text = str(body.get_content())
    except (LookupError, ValueError) as error:
        raise BadMail("a text part that does not decode") from error
    if body.get_content_subtype() == "html":
        text = _TAGS.sub(" ", text)
    text = text.replace("\x00", "").strip()
    if not text and not has_files:
        raise BadMail("an empty message")
    return text if len(text) <= MAX_MAIL_TEXT else text[:MAX_MAIL_TEXT] + "\n[cut]"


def reply_subject(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else f"Re: {subject}".strip()


# ---------------------------------------------------------------------- SMS

# GSM 03.38: the default alphabet (one septet each) and its extension table (two: escape + char).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")
MAX_SMS_TEXT = 1600
# What one message of a reply may hold: providers concatenate up to 10 segments well.
SEGMENTS_PER_MESSAGE = 10


def sms_encoding(text: str) -> str:
    """ "GSM-7" when every character is in the GSM alphabet, else "UCS-2"."""
    return "GSM-7" if all(c in GSM_BASIC or c in GSM_EXTENDED for c in text) else "UCS-2"


def _cost(char: str, encoding: str) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) one character takes."""
    if encoding == "GSM-7":
        return 2 if char in GSM_EXTENDED else 1
    return 2 if ord(char) > 0xFFFF else 1


def sms_segments(text: str) -> int:
    """How many segments a message takes: 160 septets or 70 code units in one, else 153 or 67
    in each part of a concatenated one (the user data header takes the rest)."""
    encoding = sms_encoding(text)
    units = sum(_cost(c, encoding) for c in text)
    single, part = (160, 153) if encoding == "GSM-7" else (70, 67)
    return 1 if units <= single else -(-units // part)


def sms_messages(text: str) -> list[str]:
    """A reply cut into messages of at most SEGMENTS_PER_MESSAGE segments each, between
    characters (a surrogate pair or an escaped GSM character is never split)."""
    encoding = sms_encoding(text)
    part = 153 if encoding == "GSM-7" else 67
    budget = part * SEGMENTS_PER_MESSAGE
    messages, current, used = [], "", 0
    for char in text:
        cost = _cost(char, encoding)
        if used + cost > budget:
            messages.append(current)
            current, used = "", 0
        current += char
        used += cost
    if current:
        messages.append(current)
    return messages


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature of a webhook: HMAC-SHA1 of the URL and the sorted form fields."""
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_valid(auth_token: str, url: str, params: dict[str, str], signature: str) -> bool:
    return bool(signature) and hmac.compare_digest(
        twilio_signature(auth_token, url, params), signature
    )


E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def uuids(v: Violations, **named: str) -> dict[str, uuid.UUID]:
    """The named request fields as UUIDs; each one that is not is added to `v`."""
    parsed = {}
    for name, value in named.items():
        try:
            parsed[name] = uuid.UUID(value)
        except ValueError:
            v.add(name, "must be a UUID")
    return parsed


# What the provider's status callback says at the end of a text's way: reached the phone, or
# not. Every other status (queued, sending, sent, accepted) is on the way.
_RECEIPT_FINAL = {"delivered": True, "undelivered": False, "failed": False}


def sms_receipt(form: dict[str, str]) -> notification_events.NoticeReceipt | None:
    """The receipt in a status callback, None when the text is still on its way, or BadMessage
    naming the field."""
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "").lower()
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", sid):
        raise BadMessage("MessageSid: 1 to 64 letters and digits")
    if status not in _RECEIPT_FINAL:
        return None
    delivered = _RECEIPT_FINAL[status]
    error = "" if delivered else f"{form.get('ErrorCode', '')[:16]} {status}".strip()
    return notification_events.NoticeReceipt(
        delivered=delivered, error=error, provider_message_id=sid
    )


def sms_inbound(form: dict[str, str]) -> tuple[str, str, str]:
    """(sender, text, message id) of an inbound SMS webhook, or BadMessage naming the field."""
    sender, text, sid = form.get("From", ""), form.get("Body", ""), form.get("MessageSid", "")
    if not E164.fullmatch(sender):
        raise BadMessage("From: an E.164 number")
    if not 0 < len(text) <= MAX_SMS_TEXT or "\x00" in text:
        raise BadMessage(f"Body: 1 to {MAX_SMS_TEXT} characters")
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", sid):
        raise BadMessage("MessageSid: 1 to 64 letters and digits")
    return sender, text, sid


# ---------------------------------------------------------------------- WeChat

MAX_WECHAT_BODY = 16_384


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    """The signature of a push: SHA-1 of the token, timestamp and nonce, sorted and joined."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()  # noqa: S324 - the protocol's


def wechat_valid(token: str, timestamp: str, nonce: str, signature: str) -> bool:
    return bool(signature) and hmac.compare_digest(
        wechat_signature(token, timestamp, nonce), signature
    )


@dataclass(frozen=True)
class WechatMessage:
    """A pushed message: who sent it (their openid), its id, and what it says as text (an
    image becomes its link, a location a map link: what a chat of text can carry)."""

    openid: str
    msg_id: str
    text: str
    # The follower's consent, from a follow ("start") or an unfollow ("stop") event.
    consent: str = ""


def wechat_message(body: bytes) -> WechatMessage | None:
    """The message of a push; None for what carries nothing to answer (events other than a
    subscription); BadMessage for XML that is not a push."""
    if len(body) > MAX_WECHAT_BODY:
        raise BadMessage("the body is too large")
    try:
        root = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as error:
        raise BadMessage("XML with a DOCTYPE or entities") from error
    except ParseError as error:
        raise BadMessage("not XML") from error
    if root.tag != "xml":
        raise BadMessage("not a push: the root is not <xml>")

    def field(name: str) -> str:
        found = root.findtext(name)
        return (found or "").strip()

    openid, kind = field("FromUserName"), field("MsgType")
    if not re.fullmatch(r"[A-Za-z0-9_-]{6,64}", openid):
        raise BadMessage("FromUserName: an openid")
    msg_id = field("MsgId") or f"{field('CreateTime')}-{field('Event')}"
    if kind == "text":
        text = field("Content")
    elif kind == "image":
        text = f"[image] {field('PicUrl')}"
    elif kind == "location":
        try:
            lat, lon = float(field("Location_X")), float(field("Location_Y"))
        except ValueError as error:
            raise BadMessage("Location_X, Location_Y: numbers") from error
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise BadMessage("Location_X, Location_Y: a place on earth")
        url = MAP_URL.format(lat=lat, lon=lon)
        text = f"[location] {field('Label')} {url}".replace("  ", " ")
    elif kind == "event":
        event = field("Event").lower()
        if event == "unsubscribe":  # WeChat lets no message reach an unfollower
            return WechatMessage(openid, msg_id[:64], "", consent="stop")
        if event != "subscribe":
            return None
        return WechatMessage(openid, msg_id[:64], "[followed the account]", consent="start")
    else:
        raise BadMessage(f"MsgType: {kind!r} is not taken")
    if not text or len(text) > MAX_TEXT or "\x00" in text:
        raise BadMessage(f"the text: 1 to {MAX_TEXT} characters")
    return WechatMessage(openid, msg_id[:64], text)


def identity_value(kind: int, value: str) -> str:
    """An identity as the channels see it: e-mail addresses in lower case, the rest as given."""
    from lianluo.gateway.v1 import gateway_pb2 as gpb

    return value.strip().lower() if kind == gpb.IDENTITY_KIND_EMAIL else value.strip()


# The keywords carriers and providers use for consent, as the whole message (any case).
STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "退订"})
START_WORDS = frozenset({"start", "unstop", "yes"})


def consent_keyword(text: str) -> str:
    """ "stop" or "start" when the message is only a consent keyword; "" otherwise."""
    word = text.strip().lower()
    return "stop" if word in STOP_WORDS else "start" if word in START_WORDS else ""


# ---------------------------------------------------------------------- attachments

# The types customers may send, each with how its content starts, so that a file named .png is
# one: a browser or a mail client says what it likes, the bytes say what it is.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "application/pdf": (b"%PDF-",),
    "text/plain": (),
}
_UNSAFE_NAME = re.compile(r"[^\w .()+,-]", re.UNICODE)
ATTACHMENT_URI = re.compile(
    r"^attachment:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


class BadAttachment(ValueError):
    """A file the gateway refuses; `too_large` tells an HTTP 413 from a 415."""

    def __init__(self, reason: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def attachment_name(raw: str) -> str:
    """A file name safe to show and to put in a header: no path, no control characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")[:120]
    return name or "file"


def check_attachment(content_type: str, data: bytes, max_bytes: int) -> str:
    """The attachment's type, when its size and its bytes are acceptable."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if len(data) > max_bytes:
        raise BadAttachment(f"larger than {max_bytes} bytes", too_large=True)
    if not data:
        raise BadAttachment("an empty file")
    if kind not in _MAGIC:
        raise BadAttachment(f"{kind or 'no type'} is not one of {', '.join(sorted(_MAGIC))}")
    magic = _MAGIC[kind]
    if magic and not data.startswith(magic):
        raise BadAttachment(f"the content is not {kind}")
    if kind == "image/webp" and data[8:12] != b"WEBP":
        raise BadAttachment("the content is not image/webp")
    if kind == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadAttachment("text/plain that is not UTF-8") from error
    return kind


def attachment_content(
    attachment_id: str, name: str, kind: str, size: int, sha256: str
) -> mpb.MessageContent:
    """A message carrying a stored attachment: an image when it is one, else a file."""
    item = mpb.Attachment(
        uri=f"attachment:{attachment_id}",
        name=name,
        content_type=kind,
        size_bytes=size,
        sha256=sha256,
    )
    if kind.startswith("image/"):
        return mpb.MessageContent(image=item)
    return mpb.MessageContent(file=item)


def attachment_id(uri: str) -> str | None:
    found = ATTACHMENT_URI.fullmatch(uri)
    return found.group(1) if found else None


# ---------------------------------------------------------------------- media fusion

MAP_URL = "https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"


def place_text(at: mpb.Location) -> str:
    """A place as text: its label, and a map link."""
    url = MAP_URL.format(lat=at.latitude, lon=at.longitude)
    return f"{at.label}\n{url}".strip()


@dataclass(frozen=True)
class Rendered:
    """A message as a channel that carries text can take it: its text, and a stored attachment
    to send with it where the channel carries files (e-mail)."""

    text: str
    attachment_id: str = ""


def render(
    content: mpb.MessageContent,
    carries_files: bool,
    link: Callable[[str], str],
    form_link: Callable[[mpb.Form], str],
) -> Rendered:
    """Fit a message to a text channel (docs/channels.md, "Media fusion"): a location becomes
    a map link; an image or a file becomes an attachment where the channel carries files, and
    a signed link elsewhere; a form becomes a link to a page that fills it."""
    kind = content.WhichOneof("content")
    if kind == "text":
        return Rendered(content.text)
    if kind == "location":
        return Rendered(place_text(content.location))
    if kind in ("image", "file"):
        item = content.image if kind == "image" else content.file
        stored = attachment_id(item.uri)
        if stored and carries_files:
            return Rendered(f"[{item.name}]", attachment_id=stored)
        url = link(stored) if stored else item.uri
        return Rendered(f"{item.name}: {url}")
    if kind == "form":
        title = content.form.title or "A form to fill"
        return Rendered(f"{title}: {form_link(content.form)}")
    return Rendered("")


# ---------------------------------------------------------------------- forms

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{4,24}$")
MAX_FORM_VALUE = 2000


class BadForm(ValueError):
    """An answer the form does not take, naming its field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def fill_form(form: mpb.Form, answers: dict[str, str]) -> mpb.Form:
    """The form filled with `answers`, each checked against its field's type."""
    filled = mpb.Form(form_id=form.form_id, title=form.title, submitted=True)
    T = mpb.FormFieldType
    for f in form.fields:
        value = answers.get(f.name, "").replace("\x00", "").strip()
        label = f.label or f.name
        if len(value) > MAX_FORM_VALUE:
            raise BadForm(label, f"at most {MAX_FORM_VALUE} characters")
        if not value:
            if f.required:
                raise BadForm(label, "is required")
        elif f.type == T.FORM_FIELD_TYPE_NUMBER:
            try:
                float(value)
            except ValueError:
                raise BadForm(label, "a number") from None
        elif f.type == T.FORM_FIELD_TYPE_DATE:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise BadForm(label, "a date, such as 2026-01-31") from None
        elif f.type == T.FORM_FIELD_TYPE_EMAIL and not _EMAIL.fullmatch(value):
            raise BadForm(label, "an e-mail address")
        elif f.type == T.FORM_FIELD_TYPE_PHONE and not _PHONE.fullmatch(value):
            raise BadForm(label, "a phone number")
        elif f.type == T.FORM_FIELD_TYPE_CHOICE and value not in f.options:
            raise BadForm(label, "one of the choices")
        answered = filled.fields.add()
        answered.CopyFrom(f)
        answered.value = value
    return filled


# ---------------------------------------------------------------------- satisfaction survey

# The channels whose customers are asked for a rating on the channel itself (the web chat asks
# in the widget).
SURVEYED_CHANNELS = frozenset({"sms", "wechat", "email"})
# Endings no person handled: self-service finished the contact, or it left the queue.
BOT_ENDINGS = frozenset({"self_service", "overflow"})
# How long a text that is only a digit answers the survey, rather than starting a conversation.
SURVEY_ANSWER_SECONDS = 24 * 3600
# What the survey says, by language: the question on a channel the customer answers by text,
# the question above the links of a mail, and the thanks for an answer.
SURVEY_TEXTS = {
    "en": (
        "How did we do? Reply 1 (poor) to 5 (great).",
        "How did we do? Choose a rating from 1 (poor) to 5 (great):",
        "Thank you for your rating.",
    ),
    # Chinese punctuation is full-width.
    "zh": (
        "我们的服务如何？请回复 1（很差）到 5（很好）。",  # noqa: RUF001
        "我们的服务如何？请选择 1（很差）到 5（很好）：",  # noqa: RUF001
        "感谢您的评价。",
    ),
}
# 1 to 5, in ASCII or full-width (as a Chinese keyboard types them).
_SCORE = re.compile("[1-5\uff11-\uff15]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[A-Za-z]")


def asks_survey(final_state: int, resolution_code: str, channel_kind: str | None) -> bool:
    """Whether an ended interaction's customer is asked for a rating on their channel: a
    conversation a person handled, closed, on a channel that answers later."""
    return (
        final_state == mpb.INTERACTION_STATE_CLOSED
        and resolution_code not in BOT_ENDINGS
        and channel_kind in SURVEYED_CHANNELS
    )


def survey_score(text: str) -> int | None:
    """The score a text gives when it is a single digit 1 to 5 (full-width too), spaces
    around it allowed; None for any other text."""
    found = text.strip()
    if not _SCORE.fullmatch(found):
        return None
    return int(found)  # int() reads full-width digits too


def survey_answerable(asked_at: datetime, rated: bool, now: datetime) -> bool:
    """Whether a survey still takes an answer by text: not answered, and asked within a day."""
    return not rated and timedelta(0) <= now - asked_at <= timedelta(seconds=SURVEY_ANSWER_SECONDS)


def guess_language(text: str) -> str:
    """ "zh" for a text mostly in Chinese characters, else "" (the gateway cannot tell)."""
    han = len(_HAN.findall(text))
    return "zh" if han and han >= len(_LETTER.findall(text)) else ""


def _survey_texts(language: str) -> tuple[str, str, str]:
    return SURVEY_TEXTS["zh" if language.lower().startswith("zh") else "en"]


def survey_text(language: str, links: list[str] | None = None) -> str:
    """The survey in the customer's language (English when unknown): a question to answer with
    a digit, or, with `links` (one per score, 1 to 5), one to answer with a click."""
    asked, choose, _ = _survey_texts(language)
    if links is None:
        return asked
    return "\n".join([choose, "", *(f"{n}: {link}" for n, link in enumerate(links, 1))])


def survey_thanks(language: str) -> str:
    return _survey_texts(language)[2]
