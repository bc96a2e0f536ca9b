"""The voice service's pure parts: SDP offer and answer, RTP and telephone events, the receive
figures, whose a dialled number is, and SIP messages it cannot read."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import wave

import pytest
from google.protobuf import timestamp_pb2
from pydantic import ValidationError

from lianluo.common.v1 import common_pb2 as common
from lianluo.runtime.errors import InvalidArgument, Violations
from lianluo.services.tenants.domain import validate_channel
from lianluo.services.voice import audio, codecs, domain, phones, rtp, sdp, sip, webphone
from lianluo.services.voice.settings import VoiceSettings
from lianluo.tenants.v1 import tenants_pb2 as pb

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=sendonly\r\n"
)


def test_an_offer_is_read_and_answered_with_the_first_g711_the_peer_prefers() -> None:
    offer = sdp.parse(OFFER)
    assert (offer.host, offer.port, offer.formats) == ("10.0.0.5", 4000, (18, 8, 0, 101))
    assert (offer.codec(), offer.events(), offer.direction) == (sdp.PCMA, 101, "sendonly")
    answer = sdp.describe(7, 1, "127.0.0.1", 20000, (sdp.PCMA,), 101, sdp.MIRROR[offer.direction])
    back = sdp.parse(answer)
    # On hold (the peer sends only), the answer only receives.
    assert (back.port, back.codec(), back.events(), back.direction) == (
        20000,
        sdp.PCMA,
        101,
        "recvonly",
    )


def test_opus_is_answered_at_the_payload_type_the_offer_gives_it() -> None:
    offer = sdp.parse(
        b"v=0\r\nc=IN IP4 10.0.0.5\r\nm=audio 4000 RTP/AVP 96 0 97\r\n"
        b"a=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/48000\r\n"
    )
    opus = offer.codec()
    assert opus == sdp.Format("opus", 96, 48000, 2)  # the peer's first choice
    # Its events run on its 48 kHz clock; there are none at 8 kHz.
    assert (offer.events(opus.clock), offer.events()) == (97, None)
    answer = sdp.parse(sdp.describe(7, 1, "127.0.0.1", 20000, (opus,), 97))
    assert (answer.codec(), answer.events(48000)) == (opus, 97)
    assert answer.names[96] == "opus/48000"
    # This side's own offer: G.711 first, Opus at its own dynamic type.
    ours = sdp.parse(sdp.describe(7, 1, "127.0.0.1", 20000, sdp.OFFER, 101))
    assert ours.formats == (0, 8, 111, 101) and ours.codec() == sdp.PCMU
    # Opus at a static payload type is no Opus this side trusts.
    assert (
        sdp.parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:8 opus/48000/2\r\n"
        ).codec()
        is None
    )


def test_opus_carries_a_voice_through_and_back() -> None:
    """20 ms frames of a tone, through one stream's encoder and another's decoder: the
    same tone comes back, as 8 kHz PCM a frame at a time."""
    tone = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(8000)
    )
    sender, receiver = codecs.codec(sdp.OPUS), codecs.codec(sdp.OPUS)
    payloads = [sender.encode(tone[i : i + 320]) for i in range(0, len(tone), 320)]
    assert all(0 < len(p) < 160 for p in payloads)  # smaller than G.711's 160 bytes
    assert {sender.ticks(p) for p in payloads} == {960}  # the 48 kHz clock
    back = b"".join(receiver.decode(p) for p in payloads)
    assert len(back) == len(tone)
    # After the codec's delay, the tone: as loud, and at 440 Hz (its zero crossings).
    samples = memoryview(back).cast("h")[2000:]
    loudness = (sum(x * x for x in samples) / len(samples)) ** 0.5
    assert 4000 < loudness < 7000, loudness
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    assert abs(crossings / (len(samples) / 8000) / 2 - 440) < 20
    assert receiver.decode(b"\xff\x00 not opus") == b"\0" * 320  # a bad packet: silence


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\n", "no m=audio"),
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "no c= address"),
        (b"v=0\r\nc=IN IP6 ::1\r\nm=audio 4000 RTP/AVP 0\r\n", "IN IP4"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n", "m=audio must be"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0 999\r\n", "below 128"),
        (b"\xff\xfe", "not text"),
    ],
)
def test_an_offer_that_cannot_be_read_says_why(body: bytes, why: str) -> None:
    with pytest.raises(sdp.SdpError, match=why):
        sdp.parse(body)


def test_an_offer_of_other_codecs_has_no_common_codec() -> None:
    offer = sdp.parse(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 9\r\n")
    assert offer.codec() is None and offer.events() is None


def test_rtp_packets_and_telephone_events_read_back_what_was_written() -> None:
    packet = rtp.Packet(0, 65535, 4_000_000_000, 1234, b"\x7f" * 160, marker=True)
    assert rtp.parse(rtp.build(packet)) == packet
    event = rtp.event(rtp.event_payload("#", True, 800))
    assert event == rtp.Event("#", True, 800)
    assert rtp.parse(b"\x80\xc8" + b"\0" * 30) is None  # RTCP sender report on the port
    assert rtp.parse(b"junk") is None
    pcm = b"".join(int(v).to_bytes(2, "little", signed=True) for v in range(-8000, 8000, 100))
    for codec in (sdp.PCMU, sdp.PCMA):
        decoded = rtp.decode(rtp.encode(pcm, codec), codec)
        assert len(decoded) == len(pcm)


def test_the_figures_count_loss_across_a_sequence_wrap_and_measure_jitter() -> None:
    figures = rtp.Figures()
    sequences = [65533, 65534, 65535, 1, 2]  # sequence 0 is lost
    for i, seq in enumerate(sequences):
        figures.add(rtp.Packet(0, seq, i * 160, 1, b""), i * 160 + (40 if i == 3 else 0))
    assert (figures.received, figures.expected, figures.lost) == (5, 6, 1)
    assert figures.jitter_ms() > 0


def channel(number: str, created: int, name: str) -> pb.Channel:
    c = pb.Channel(id=name, name=name, flow="main", voice=pb.VoiceChannel(numbers=[number]))
    c.create_time.CopyFrom(timestamp_pb2.Timestamp(seconds=created))
    return c


def test_a_number_two_tenants_list_stays_with_the_first() -> None:
    first, later = channel("+8621000", 100, "a"), channel("+8621000", 200, "b")
    lines = domain.numbers([("tenant-b", later), ("tenant-a", first)])
    assert lines["+8621000"].tenant_id == "tenant-a"


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Signal= #\r\n", "#"),
        ("application/dtmf", b"7", "7"),
        ("application/dtmf-relay", b"Signal=55\r\n", ""),
        ("text/plain", b"Signal=5", ""),
    ],
)
def test_an_info_says_one_digit_or_none(content_type: str, body: bytes, digit: str) -> None:
    assert domain.info_digit(content_type, body) == digit


def test_a_prompt_is_said_with_each_choice_and_its_digit() -> None:
    said = domain.spoken("How can we help?", [("1", "a lost card"), ("2", "payments")], "en")
    assert said == "How can we help? For a lost card, press 1. For payments, press 2."
    assert domain.voice_of("zh-CN") == "cmn"


BAD_CSEQ = (
    b"INVITE sip:+86@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKa\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: one INVITE\r\n\r\n"
)


def test_a_message_that_cannot_be_read_gets_a_400_when_it_can_be_answered() -> None:
    with pytest.raises(sip.SipError):
        sip.read(BAD_CSEQ)
    answer = sip.bare_reply(BAD_CSEQ, 400)
    assert answer is not None and answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b"Call-ID: x\r\n" in answer and b"branch=z9hG4bKa" in answer
    # Without the headers to address an answer to, nothing is sent.
    assert sip.bare_reply(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n", 400) is None
    assert sip.bare_reply(b"\x00\x01garbage", 400) is None


def test_the_digest_is_rfc_2617s_own_example() -> None:
    challenge = {"nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093", "qop": "auth", "nc": "00000001"}
    challenge["cnonce"] = "0a4f113b"
    response = phones.digest(
        "Mufasa", "Circle Of Life", "GET", "/dir/index.html", challenge, "testrealm@host.com"
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_only_a_free_answer_is_keyed_in_a_menu_takes_one_key() -> None:
    menu = common.Prompt(expects_answer=True, choices=[common.PromptChoice(digit="1")])
    assert domain.keyed(common.Prompt(expects_answer=True, sensitive=True))
    assert not domain.keyed(menu)
    assert not domain.keyed(common.Prompt(text="Welcome."))
    assert not domain.keyed(None)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("<sip:wang.fang@10.0.0.5:5060>", "wang.fang"),
        ("sip:cards@example.com", "cards"),
        ("<sip:bob@h;transport=udp>", "bob"),
        ("<sip:li%2Ewei@h>", "li.wei"),
        ("<sip:bob@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>", "bob"),
        # A phone number, or nothing: no name to hand it to.
        ("<tel:+8613900001111>", ""),
        ("", ""),
    ],
)
def test_a_refer_names_the_colleague_or_queue_it_hands_the_call_to(header: str, name: str) -> None:
    assert sip.refer_target(header) == name


@pytest.mark.parametrize(
    ("header", "replaced"),
    [
        (
            "<sip:bob@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
            sip.Replaces("abc@h", "1", "2"),
        ),
        (
            "<sip:bob@h:5060;transport=udp?Replaces=consult%2F%2F%2Fx%3Bfrom-tag%3Db%3Bto-tag%3Da>",
            sip.Replaces("consult///x", "a", "b"),
        ),
        # A blind transfer, or a Replaces without both tags: no dialog to take over.
        ("<sip:bob@h>", None),
        ("<sip:bob@h?Replaces=abc%3Bto-tag%3D1>", None),
        ("<sip:bob@h?Replaces=%3Bto-tag%3D1%3Bfrom-tag%3D2>", None),
    ],
)
def test_an_attended_transfer_names_the_dialog_it_replaces(
    header: str, replaced: sip.Replaces | None
) -> None:
    assert sip.replaces(header) == replaced


def test_a_voice_channels_hold_music_is_a_recordings_name() -> None:
    def problems(hold: str) -> list[str]:
        v = Violations()
        channel = pb.Channel(
            name="phone",
            queue="cards",
            voice=pb.VoiceChannel(numbers=["+862180001234"], hold_audio=hold),
        )
        validate_channel(channel, v)
        try:
            v.raise_if_any()
        except InvalidArgument as error:
            return [f.field for f in error.violations]
        return []

    assert problems("") == [] and problems("music.jazz-2") == []
    assert problems("Jazz") == ["channel.voice.hold_audio"]


def _wav(pcm: bytes, rate: int = 8000, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


async def test_a_tenants_recording_is_had_in_the_calls_language_or_else_without_one() -> None:
    kept = {("t1", "welcome", ""): _wav(b"\x01\x00" * 800), ("t1", "menu", "zh"): b"not a wav"}
    asked: list[tuple[str, str, str]] = []

    async def fetch(tenant_id: str, name: str, language: str) -> bytes | None:
        asked.append((tenant_id, name, language))
        return kept.get((tenant_id, name, language))

    tenant_audio = audio.TenantAudio(fetch)
    # No Chinese welcome: the one without a language plays, as 8 kHz PCM.
    assert await tenant_audio.get("t1", "welcome", "zh") == b"\x01\x00" * 800
    assert asked == [("t1", "welcome", "zh"), ("t1", "welcome", "")]
    # Kept: asked again within the minute, nothing is fetched.
    assert await tenant_audio.get("t1", "welcome", "zh") == b"\x01\x00" * 800
    assert len(asked) == 2
    # Another tenant's name is that tenant's own: nothing of t1's.
    assert await tenant_audio.get("t2", "welcome", "") is None
    # What cannot be read plays nothing (the text is said instead).
    assert await tenant_audio.get("t1", "menu", "zh") is None


def test_a_stereo_16_khz_recording_plays_as_8_khz_mono() -> None:
    stereo = b"\x10\x00\x30\x00" * 1600  # 0.1 s: left 16, right 48
    pcm = audio.pcm_of(_wav(stereo, 16000, 2))
    assert len(pcm) == 800 * 2  # 0.1 s at 8 kHz, 16-bit


def test_rtcp_reports_read_back_what_was_written() -> None:
    f = rtp.Figures()
    for seq in (10, 11, 13, 14):  # 12 lost
        f.add(rtp.Packet(0, seq, seq * 160, 0xABCDEF01, b""), seq * 160)
    f.last_sr, f.last_sr_at = 0x12345678, 100.0
    block = rtp.report_block(f, 101.5)
    packet = rtp.sender_report(0x11111111, 1_800_000_000.25, 4242, 50, 8000, [block])
    senders, reports = rtp.parse_rtcp(packet + b"\x81\xca\x00\x01junk")  # and an SDES
    assert senders == [rtp.SenderInfo(0x11111111, senders[0].ntp_middle, 50)]
    assert reports == [rtp.Report(0xABCDEF01, 256 // 5, 1, 14, int(f.jitter))]
    # The next report counts only what was lost since this one.
    assert f.fraction_lost() == 0
    # Before this side sends anything, it is a receiver report; junk is no report at all.
    assert rtp.parse_rtcp(rtp.sender_report(7, 0.0, 0, 0, 0, []))[1] == []
    assert rtp.parse_rtcp(b"\x00\x01") == ([], [])


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"voice_tls_cert_file": "voice.crt"}, "go together"),
        (
            {"voice_tls_cert_file": "/nowhere/voice.crt", "voice_tls_key_file": "/nowhere/k"},
            "LIANLUO_VOICE_TLS_CERT_FILE /nowhere/voice.crt and its key /nowhere/k cannot be used",
        ),
    ],
)
def test_sip_over_tls_needs_a_certificate_and_its_key(files: dict[str, str], why: str) -> None:
    base = {
        "database_url": "postgresql://127.0.0.1/x",
        "kafka_bootstrap_servers": "127.0.0.1:9092",
        "admin_key": "k" * 32,
    }
    with pytest.raises(ValidationError, match=why):
        VoiceSettings.model_validate({**base, **files})


def test_in_a_conference_each_leg_hears_the_others_mixed_and_not_itself() -> None:
    caller, li, he = (audio.RtpSession(sdp.PCMU, None, lambda _d: None) for _ in range(3))
    conference = audio.Conference(caller, li)
    conference.join(he)
    low, high = (int(v).to_bytes(2, "little", signed=True) * rtp.SAMPLES for v in (1000, 30000))
    conference.heard(caller, low)
    conference.heard(li, high)
    # He hears both at once, summed; Li hears the caller alone.
    assert he._mixed() == rtp.mix(low, high)
    assert he._mixed() is None  # each 20 ms is heard once
    assert li._mixed() == low and caller._mixed() == high
    # Li leaves: nothing Li said waits for the others, and Li hears no more.
    conference.heard(li, high)
    conference.leave(li)
    conference.heard(caller, low)
    assert he._mixed() == low and li._mixed() is None and li.conference is None


def test_an_srtp_offer_is_keyed_and_answered_with_this_sides_own_key() -> None:
    theirs = sdp.Crypto.new(tag=3)
    body = (
        "v=0\r\nc=IN IP4 10.0.0.5\r\nm=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_256_HMAC_SHA1_80 inline:{'A' * 60}\r\n"  # a suite not spoken: skipped
        f"a={theirs.attribute()}|2^20|1:4\r\n"
    ).encode()
    offer, codec = sdp.offer("application/sdp", body)
    assert (offer.profile, offer.srtp(), codec) == ("RTP/SAVP", theirs, sdp.PCMU)
    session = audio.RtpSession(codec, None, lambda _d: None)
    ours = phones.keyed(offer, session)
    assert ours is not None and ours.tag == 3 and ours.key != theirs.key
    assert session.secured and session.profile == "RTP/SAVP"
    answer = sdp.parse(sdp.describe(7, 1, "127.0.0.1", 20000, (codec,), None, key=ours,
                                    profile=offer.profile))  # fmt: skip
    assert (answer.profile, answer.srtp()) == ("RTP/SAVP", ours)
    # SRTP only, and no key this side can use: refused, saying why.
    only = b"v=0\r\nc=IN IP4 10.0.0.5\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 F8_128 inline:x\r\n"
    with pytest.raises(sdp.Refusal) as refused:
        sdp.offer("application/sdp", only)
    assert (
        refused.value.code == 488 and "AES_CM_128_HMAC_SHA1_80" in refused.value.headers["Warning"]
    )
    # A plain offer stays plain.
    plain, _ = sdp.offer("application/sdp", OFFER)
    assert phones.keyed(plain, audio.RtpSession(sdp.PCMU, None, lambda _d: None)) is None


async def test_srtp_packets_pass_between_keyed_legs_and_altered_ones_are_dropped() -> None:
    class Wire:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def sendto(self, data: bytes, _addr: object) -> None:
            self.sent.append(data)

    a_key, b_key = sdp.Crypto.new(), sdp.Crypto.new()
    a, b = (audio.RtpSession(sdp.PCMU, None, lambda _d: None) for _ in range(2))
    a.secure(a_key, b_key)
    b.secure(b_key, a_key)
    wire = Wire()
    a._transport, a.remote = wire, ("127.0.0.1", 4000)  # type: ignore[assignment]
    voice = rtp.encode(b"\x10\x00" * rtp.SAMPLES, sdp.PCMU)
    a._send(rtp.Packet(0, 1, 160, 42, voice))
    sealed = wire.sent[0]
    assert voice not in sealed and len(sealed) == 12 + len(voice) + 10  # encrypted, with a tag
    b.datagram_received(sealed, ("127.0.0.1", 5000))
    assert b.figures.received == 1
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    b.datagram_received(altered, ("127.0.0.1", 5000))
    b.datagram_received(rtp.build(rtp.Packet(0, 2, 320, 42, voice)), ("127.0.0.1", 5000))
    assert b.figures.received == 1  # neither the altered packet nor a plain one got through


async def test_a_partner_in_the_same_codec_is_relayed_at_once_and_another_on_the_legs_clock() -> (
    None
):
    class Wire:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def sendto(self, data: bytes, _addr: object) -> None:
            self.sent.append(data)

    caller = audio.RtpSession(sdp.PCMU, None, lambda _d: None)
    phone = audio.RtpSession(sdp.PCMU, None, lambda _d: None)
    opus_phone = audio.RtpSession(sdp.OPUS, None, lambda _d: None)
    for leg in (phone, opus_phone):
        leg._transport, leg.remote = Wire(), ("127.0.0.1", 4000)  # type: ignore[assignment]
    # 30 ms of a voice in one G.711 packet: passed through as it came.
    pcm = (3000).to_bytes(2, "little", signed=True) * 240
    phone.relay(caller, rtp.encode(pcm, sdp.PCMU), pcm)
    assert rtp.parse(phone._transport.sent[0]).payload == rtp.encode(pcm, sdp.PCMU)  # type: ignore[union-attr]
    # To an Opus leg: nothing at once; its ticks take 20 ms, then the last 10 ms and silence.
    opus_phone.relay(caller, rtp.encode(pcm, sdp.PCMU), pcm)
    assert opus_phone._transport.sent == []  # type: ignore[union-attr]
    first, second = opus_phone._mixed(), opus_phone._mixed()
    assert first == pcm[:320] and second == pcm[320:].ljust(320, b"\0")
    assert opus_phone._mixed() is None


async def test_the_phone_in_the_browser_takes_and_gives_the_calls_pcm_on_its_own_clock() -> None:
    """A caller bridged to the phone in the browser: the caller's PCM goes out 20 ms a tick,
    whole, for aiortc to encode; what the browser says reaches the caller as PCM."""
    phone = webphone.WebPhone("t", "a", lambda _p: None)
    leg = webphone.WebSession(phone)
    phone.session = leg
    caller = audio.RtpSession(sdp.PCMU, None, lambda _d: None)
    caller._transport, caller.remote = object(), ("127.0.0.1", 4000)  # type: ignore[assignment]
    caller.partner, leg.partner = leg, caller
    pcm = (3000).to_bytes(2, "little", signed=True) * 240  # 30 ms
    leg.relay(caller, rtp.encode(pcm, sdp.PCMU), pcm)
    assert phone.outgoing._frames.empty()  # not at once: on the leg's clock
    leg.start()
    frames = [await asyncio.wait_for(phone.outgoing.recv(), 1) for _ in range(2)]
    assert [f.samples for f in frames] == [160, 160]
    assert bytes(frames[0].planes[0])[:320] == pcm[:320]
    assert frames[1].pts > frames[0].pts
    # The browser's audio, decoded by aiortc: counted, and mixed for the caller's next tick.
    said = (-2000).to_bytes(2, "little", signed=True) * 160
    leg.hear(said)
    assert leg.figures.received == 1
    assert caller._mixed() == said
    leg.close()
    assert phone.session is None
    await phone.close()
