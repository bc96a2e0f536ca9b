"""Phone calls into a whole cell: SIPp (Debian's `sip-tester`) calls a tenant's number, hears
the flow's prompts, walks the menu by RFC 4733 DTMF from a pcap and is queued; requests the
voice service cannot serve get the SIP answer that says why."""

from __future__ import annotations

import array
import asyncio
import contextlib
import io
import json
import shutil
import socket
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue, user
from google.protobuf import field_mask_pb2
from grpc_errors import bad_fields, fails
from tls_files import issue, make_ca

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.runtime.objects import Objects
from lianluo.runtime.service import Service
from lianluo.services.console.app import build as build_console
from lianluo.services.console.settings import ConsoleSettings
from lianluo.services.voice import rtp, sdp
from lianluo.services.voice.app import assemble
from lianluo.services.voice.audio import Speech, pcm_of
from lianluo.services.voice.service import Call, Calls
from lianluo.services.voice.settings import VoiceSettings
from lianluo.tenants.v1 import audio_pb2 as audio_pb
from lianluo.tenants.v1 import audio_pb2_grpc as audio_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc
from lianluo.voice.v1 import voice_pb2 as vpb
from lianluo.voice.v1 import voice_pb2_grpc as voice_rpc

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed")
NUMBER = "+862180001234"
# A number whose queue overflows to a callback at once.
CALLBACK_NUMBER = "+862180005678"
SCENARIOS = Path(__file__).parent / "sipp"


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("voice"))
    with running_cell(stack, folder, f"voice_{uuid.uuid4().hex[:10]}") as running:
        yield running


@dataclass
class Line:
    tenant: pb.Tenant
    key: str
    voice: Service
    calls: Calls
    port: int
    settings: VoiceSettings
    trunk: int
    # The CA that signed the voice service's certificate, for phones over TLS.
    ca: Path
    agent_id: str = ""


def _pattern_wav(step: int, seconds: float) -> bytes:
    """An 8 kHz mono WAV of a sawtooth: its exact samples are easy to find in a recording."""
    samples = [(i * step) % 4000 - 2000 for i in range(int(8000 * seconds))]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(array.array("h", samples).tobytes())
    return out.getvalue()


async def _kept_audio(cell: Cell, line: Line, name: str) -> bytes:
    """A recording of the tenant as the tenants service keeps it, as PCM."""
    async with grpc.aio.insecure_channel(cell.address("tenants")) as tch:
        found = await audio_rpc.AudioServiceStub(tch).GetAudio(
            audio_pb.GetAudioRequest(tenant_id=line.tenant.id, name=name),
            metadata=(("authorization", f"Bearer {line.key}"),),
        )
    return pcm_of(found.wav)


def phone_flow() -> pb.Flow:
    return pb.Flow(
        name="phone",
        entry_node="welcome",
        nodes=[
            pb.FlowNode(
                id="welcome",
                # The tenant's recording plays; a chat would show the text.
                prompt=pb.PromptNode(text="Welcome to Acme.", next="menu", audio="welcome"),
            ),
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(
                    prompt="How can we help?",
                    choices=[
                        pb.MenuChoice(digit="1", label="a lost card", next="cards"),
                        pb.MenuChoice(digit="2", label="anything else", next="bye"),
                        pb.MenuChoice(digit="3", label="your account", next="pin"),
                    ],
                    timeout_seconds=20,
                    no_match_next="bye",
                ),
            ),
            pb.FlowNode(id="cards", route_to_queue=pb.RouteToQueueNode(queue="cards")),
            pb.FlowNode(
                id="pin",
                collect=pb.CollectNode(
                    prompt="Please key in your PIN, then the hash key.",
                    variable="pin",
                    pattern=r"\d{4}",
                    timeout_seconds=20,
                    next="check",
                    failure_next="bye",
                    sensitive=True,
                ),
            ),
            pb.FlowNode(
                id="check",
                condition=pb.ConditionNode(
                    branches=[
                        pb.ConditionBranch(
                            variable="pin",
                            operator=pb.CONDITION_OPERATOR_EQUALS,
                            value="4271",
                            next="secure",
                        )
                    ],
                    default_next="bye",
                ),
            ),
            pb.FlowNode(id="secure", route_to_queue=pb.RouteToQueueNode(queue="secure")),
            pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye.")),
        ],
    )


@pytest.fixture(scope="module")
async def line(
    cell: Cell, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Line]:
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    t, c = await onboard(Client(tch, ADMIN_KEY))
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    await c.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=t.id, queue=queue("secure")), metadata=c.md
    )
    await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=phone_flow()), metadata=c.md)
    # The tenant's recordings: a welcome, and music on hold (each a pattern no voice makes).
    audio = audio_rpc.AudioServiceStub(tch)
    for name, step in (("welcome", 37), ("music", 53)):
        await audio.PutAudio(
            audio_pb.PutAudioRequest(
                tenant_id=t.id, audio=audio_pb.Audio(name=name, wav=_pattern_wav(step, 1.2))
            ),
            metadata=c.md,
        )
    # Someone who could take the calls, though not signed in: a call waits in its queue
    # instead of overflowing at once for want of anyone (each test signs in whom it needs).
    await c.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=t.id, agent=agent("zhou.min")), metadata=c.md
    )
    await rpc.ChannelServiceStub(tch).CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="phone",
                flow="phone",
                voice=pb.VoiceChannel(numbers=[NUMBER], hold_audio="music"),
            ),
        ),
        metadata=c.md,
    )
    # Calls wait in "callbacks" for 2 s, then are called back 12 s later through the trunk
    # (a SIPp receiver, in a test).
    callbacks = queue("callbacks")
    callbacks.max_wait_seconds = 2
    callbacks.overflow.CopyFrom(pb.Overflow(kind=pb.OVERFLOW_KIND_CALLBACK))
    await c.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=t.id, queue=callbacks), metadata=c.md
    )
    await rpc.ChannelServiceStub(tch).CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="callbacks",
                queue="callbacks",
                voice=pb.VoiceChannel(numbers=[CALLBACK_NUMBER]),
            ),
        ),
        metadata=c.md,
    )
    policy = pb.Tenant(id=t.id)
    policy.routing_policy.queues["callbacks"].callback_after_seconds = 12
    await c.tenants.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=policy, update_mask=field_mask_pb2.FieldMask(paths=["routing_policy"])
        ),
        metadata=c.md,
    )
    trunk = _free_udp_port()
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki, "voice-ca")
    certificate = issue(ca, pki, "voice", server_ip="127.0.0.1")
    env = {k.removeprefix("LIANLUO_").lower(): v for k, v in cell.env.items()}
    settings = VoiceSettings(
        **env,
        grpc_port=0,
        voice_sip_port=0,
        voice_rtp_ports="41000-41099",
        voice_tenants_address=cell.address("tenants"),
        voice_media_address=cell.address("media"),
        voice_gateway_address=cell.address("gateway"),
        voice_acd_address=cell.address("acd"),
        voice_invites_per_second=5,
        object_store_path=str(tmp_path_factory.mktemp("objects")),
        voice_trunk=f"127.0.0.1:{trunk}",
        voice_tls_port=0,
        voice_tls_cert_file=str(certificate.cert),
        voice_tls_key_file=str(certificate.key),
    )
    # The first calls are timed against the flow: they wait until the services that route
    # a call consume their topics (a new consumer group takes seconds to form).
    async with asyncio.timeout(60):
        for name in ("ivr", "media", "acd"):
            while '"partitions assigned"' not in cell.replica(name).log.read_text():
                await asyncio.sleep(0.2)
    voice, calls = await assemble(settings)
    task = asyncio.create_task(voice.serve())
    async with asyncio.timeout(30):
        while calls._line(CALLBACK_NUMBER) is None:  # until the channels are on tenant.config
            await asyncio.sleep(0.2)
    assert calls.endpoint is not None
    yield Line(t, c.key, voice, calls, calls.endpoint.port, settings, trunk, ca.path)
    voice.request_stop()
    await task
    await tch.close()


async def sipp(
    scenario: str,
    port: int,
    service: str,
    folder: Path,
    *extra: str,
    local_port: int = 0,
    values: dict[str, str] | None = None,
) -> str:
    """Run a SIPp scenario once, from `local_port` (else any free one); [audio] in it is
    three seconds of a voice, as 8 kHz mu-law, and each of `values` is put in its place."""
    said = await Speech("espeak-ng").say("Hello, I lost my card yesterday.", "en")
    audio = folder / "caller.ulaw"
    audio.write_bytes(rtp.encode(said, sdp.PCMU))
    played = folder / scenario
    text = (SCENARIOS / scenario).read_text().replace("[audio]", str(audio))
    for name, value in (values or {}).items():
        text = text.replace(f"[{name}]", value)
    played.write_text(text)
    process = await asyncio.create_subprocess_exec(
        "sipp",
        "-sf",
        str(played),
        f"127.0.0.1:{port}",
        "-s",
        service,
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-m",
        "1",
        "-timeout",
        "40",
        "-nostdin",
        "-timeout_error",
        # Its own SIP port: never the 5060 a running `make run` holds.
        "-p",
        str(local_port or _free_udp_port()),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    assert process.returncode == 0, text[:2500]
    return text


async def test_a_caller_walks_the_menu_by_dtmf_and_is_queued(
    line: Line, cell: Cell, tmp_path: Path
) -> None:
    await sipp("ivr_dtmf.xml", line.port, NUMBER, tmp_path)
    async with asyncio.timeout(10):
        while not line.calls.ended:
            await asyncio.sleep(0.1)
    call = line.calls.ended[-1]
    assert call.tenant_id == line.tenant.id
    # The caller pressed 1 and was heard; they heard the prompts (50 packets a second).
    assert call.digits == "1"
    assert call.sent > 50
    assert call.received > 50 and call.lost == 0
    # The call is recorded: both parties, as long as the call, hashed, on the interaction's leg.
    kept = await _kept_recording(cell, line, call.interaction_id)
    assert 10_000 <= kept.duration_ms <= 15_000, kept.duration_ms  # the scenario's 11 s, setup
    data = await Objects(line.settings).get(kept.uri.removeprefix("object:"), kept.sha256)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = wav.readframes(wav.getnframes())
    assert abs(wav.getnframes() / 8 - kept.duration_ms) < 50
    caller, heard = _channel(frames, 0), _channel(frames, 1)
    assert caller > 100 and heard > 100, (caller, heard)  # each side said something
    # The caller heard the tenant's own welcome, and its music while queued (after the
    # spoken notice), sample for sample.
    said = memoryview(frames).cast("h")[1::2].tobytes()
    assert (await _kept_audio(cell, line, "welcome"))[:3200] in said, "no recorded welcome"
    assert (await _kept_audio(cell, line, "music"))[:4800] in said, "no music on hold"

    # The menu's choice routed the call to cards: the ACD counts it as entered there.
    await _entered(cell, line, "cards")


async def _kept_recording(cell: Cell, line: Line, interaction_id: str) -> mpb.Recording:
    """The recording named on the call's leg, once the call's end has reached media."""
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    key = (("authorization", f"Bearer {line.key}"),)
    async with asyncio.timeout(10):
        while True:
            it = await media.GetInteraction(
                mpb.GetInteractionRequest(tenant_id=line.tenant.id, interaction_id=interaction_id),
                metadata=key,
            )
            if it.media[0].HasField("recording"):
                return it.media[0].recording
            await asyncio.sleep(0.2)


async def _entered(cell: Cell, line: Line, queue_name: str) -> None:
    """Wait until the ACD counts a contact as entered in `queue_name`."""
    acd = acd_rpc.AcdServiceStub(grpc.aio.insecure_channel(cell.address("acd")))
    async with asyncio.timeout(20):
        while True:
            figures = await acd.QueueStats(
                apb.QueueStatsRequest(tenant_id=line.tenant.id, queues=[queue_name]),
                metadata=(("authorization", f"Bearer {line.key}"),),
            )
            if figures.queues and figures.queues[0].entered >= 1:
                return
            await asyncio.sleep(0.2)


async def test_a_pin_keyed_in_answers_the_flow_and_is_not_recorded(
    line: Line, cell: Cell, tmp_path: Path
) -> None:
    before = len(line.calls.ended)
    await sipp("ivr_pin.xml", line.port, NUMBER, tmp_path)
    async with asyncio.timeout(10):
        while len(line.calls.ended) == before:
            await asyncio.sleep(0.1)
    call = line.calls.ended[-1]
    assert call.digits == "34271#"
    # The four keys and the hash key were one answer: the PIN matched, and the call was
    # routed to the secure queue.
    await _entered(cell, line, "secure")
    kept = await _kept_recording(cell, line, call.interaction_id)
    # From the PIN's prompt to the hash key (about 3.6 s of the scenario), nothing is
    # recorded, though the caller talked all along.
    assert 2_000 <= kept.paused_ms <= 6_000, kept.paused_ms
    data = await Objects(line.settings).get(kept.uri.removeprefix("object:"), kept.sha256)
    with wave.open(io.BytesIO(data)) as wav:
        frames = wav.readframes(wav.getnframes())
    assert _channel(frames, 0) > 100, "the caller is heard outside the pause"
    assert _longest_silence_ms(frames) >= kept.paused_ms - 40


def _longest_silence_ms(frames: bytes) -> int:
    """The longest run of 20 ms in which both channels of 16-bit stereo frames are zero."""
    samples = memoryview(frames).cast("h")
    per_tick = rtp.SAMPLES * 2
    longest = run = 0
    for start in range(0, len(samples) - per_tick + 1, per_tick):
        run = run + 1 if not any(samples[start : start + per_tick]) else 0
        longest = max(longest, run)
    return longest * 20


# ---------------------------------------------------------------------- what cannot be served


def _request(method: str, user: str, port: int, body: str = "", call: str = "") -> bytes:
    call = call or uuid.uuid4().hex
    headers = [
        f"{method} sip:{user}@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{uuid.uuid4().hex[:12]}",
        "From: <sip:+8613900002222@127.0.0.1:5999>;tag=t1",
        f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: {call}",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
    ]
    if body:
        headers.append("Content-Type: application/sdp")
    headers += [f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(headers).encode()


def _exchange(data: bytes, port: int) -> list[str]:
    """What the service answers a datagram within a second: the status lines."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(data, ("127.0.0.1", port))
        answers = []
        try:
            while True:
                answers.append(s.recv(65536).decode(errors="replace"))
        except TimeoutError:
            pass
    return answers


G729_ONLY = (
    "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 18\r\n"
)


async def test_requests_that_cannot_be_served_get_the_sip_answer_that_says_why(line: Line) -> None:
    def first_line(data: bytes) -> list[str]:
        # An INVITE's final answer comes again until ACKed (timer G): each status once.
        return sorted({a.split("\r\n", 1)[0] for a in _exchange(data, line.port)})

    options = await asyncio.to_thread(first_line, _request("OPTIONS", NUMBER, line.port))
    assert options == ["SIP/2.0 200 OK"]
    unknown = await asyncio.to_thread(
        first_line, _request("INVITE", "+861000000000", line.port, G729_ONLY)
    )
    assert unknown == ["SIP/2.0 404 Not Found"]
    # A colleague's name is dialled by an agent's phone, with its digest: challenged without.
    named = await asyncio.to_thread(first_line, _request("INVITE", "wang.fang", line.port))
    assert named == ["SIP/2.0 401 Unauthorized"]
    codecs = await asyncio.to_thread(first_line, _request("INVITE", NUMBER, line.port, G729_ONLY))
    assert codecs == ["SIP/2.0 488 Not Acceptable Here"]
    garbled = _request("INVITE", NUMBER, line.port).replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    assert await asyncio.to_thread(first_line, garbled) == ["SIP/2.0 400 Bad Request"]
    # A burst of INVITEs over the replica's rate: refused with when to try again, and no call
    # is left behind.
    burst = await asyncio.gather(
        *(
            asyncio.to_thread(
                _exchange, _request("INVITE", NUMBER, line.port, G729_ONLY), line.port
            )
            for _ in range(12)
        )
    )
    refused = [a for answers in burst for a in answers if a.startswith("SIP/2.0 503")]
    assert refused and all("Retry-After: " in a for a in refused)
    assert line.calls.open_calls == 0


# ---------------------------------------------------------------------- an agent's phone


# No spaces: the accounts file of baresip ends a parameter at one.
PASSWORD = "phone-password-of-enough-length"


@dataclass
class Phone:
    """An agent's baresip, registered and answering by itself; `command` drives it as its
    user would (ctrl_tcp: hold, transfer, ...)."""

    agent_id: str
    name: str
    control: int
    process: asyncio.subprocess.Process

    async def command(self, command: str, params: str = "") -> None:
        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.control)
        writer.write(b"%d:%s," % (len(body), body))  # a netstring
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(4096), 5)  # its answer
        writer.close()


async def _agent_with_phone(line: Line, cell: Cell, name: str) -> pb.Agent:
    """A new agent whose SIP phone may register, once the voice service knows them."""
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    md = (("authorization", f"Bearer {line.key}"),)
    person = agent(name)
    person.sip_password = PASSWORD
    made = await rpc.AgentServiceStub(tch).CreateAgent(
        pb.CreateAgentRequest(tenant_id=line.tenant.id, agent=person), metadata=md
    )
    await tch.close()
    assert not made.sip_password, "a write-only password came back"
    async with asyncio.timeout(30):  # until the voice service has the agent from tenant.config
        while line.calls.phones._agent(f"{name}@{line.tenant.name}") is None:
            await asyncio.sleep(0.2)
    return made


async def _phone(
    line: Line,
    cell: Cell,
    folder: Path,
    name: str,
    sentence: str,
    first_rtp_port: int,
    available: bool = True,
    codec: str = "PCMU",
    tls: bool = False,
) -> Phone:
    """A baresip phone of a new agent `name` (Debian's), registered with digest
    authentication (over TLS, trusting the voice service's CA, when `tls`), answering by
    itself, saying `sentence` again and again, in `codec` only."""
    made = await _agent_with_phone(line, cell, name)
    said = await Speech("espeak-ng").say(sentence, "en")
    # baresip reads its file at the codec's own rate and channels (Opus: 48 kHz, stereo).
    rate, channels = (48000, 2) if codec.startswith("opus") else (8000, 1)
    said = rtp.resample(said, 8000, rate)
    if channels == 2:
        said = rtp.stereo(said, said)
    with wave.open(str(folder / "voice.wav"), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        # The sentence again and again for a minute (baresip hangs up at the file's end).
        once = said + b"\0" * rate * channels
        per_minute = rate * channels * 2 * 60
        out.writeframes((once * (per_minute // len(once) + 1))[:per_minute])
    sip_port, control = _free_sip_port(), _free_tcp_port()
    (folder / "config").write_text(
        "\n".join(
            [
                f"sip_listen 127.0.0.1:{sip_port}",
                "net_interface 127.0.0.1",
                f"audio_source aufile,{folder / 'voice.wav'}",
                "audio_player alsa,null",
                "audio_alert alsa,null",
                f"rtp_ports {first_rtp_port}-{first_rtp_port + 99}",
                f"ctrl_tcp_listen 127.0.0.1:{control}",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module opus.so",
                "module srtp.so",
                "module aufile.so",
                "module alsa.so",
                "module_tmp account.so",
                "module_app menu.so",
                "module_app ctrl_tcp.so",
                f"sip_cafile {line.ca}",
                "",
            ]
        )
    )
    assert line.calls.endpoint is not None
    address = (
        f"127.0.0.1:{line.calls.endpoint.tls_port};transport=tls"
        if tls
        else f"127.0.0.1:{line.port};transport=udp"
    )
    (folder / "accounts").write_text(
        f"<sip:{name}@{address}>"
        f";auth_user={name}@{line.tenant.name};auth_pass={PASSWORD}"
        f";answermode=auto;regint=600;audio_codecs={codec}"
        # Over TLS, SRTP when the other side keys it (SDES).
        + (";mediaenc=srtp" if tls else "")
        + "\n"
    )
    log = folder / "baresip.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            "baresip", "-f", str(folder), stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
        )
    phone = Phone(made.id, name, control, process)
    try:
        async with asyncio.timeout(30):  # registered, after the digest challenge
            while (line.tenant.id, made.id) not in line.calls.phones._bindings:
                assert process.returncode is None, log.read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.2)
        if available:
            await _presence(cell, line, made.id, apb.PRESENCE_AVAILABLE)
    except BaseException:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        raise
    return phone


@pytest.fixture(scope="module")
async def phone(
    line: Line, cell: Cell, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Phone]:
    """Li's phone."""
    if shutil.which("baresip") is None:
        pytest.skip("baresip is not installed")
    li = await _phone(
        line,
        cell,
        tmp_path_factory.mktemp("li"),
        "li.wei",
        "Hello, this is Li. How can I help you today?",
        first_rtp_port=42000,
    )
    line.agent_id = li.agent_id
    yield li
    li.process.terminate()
    await li.process.wait()


async def _ends_with_both_sides(cell: Cell, line: Line, interaction_id: str) -> mpb.Recording:
    """The call's recording, whose last two seconds have the caller on the left and whoever
    the caller heard on the right."""
    kept = await _kept_recording(cell, line, interaction_id)
    data = await Objects(line.settings).get(kept.uri.removeprefix("object:"), kept.sha256)
    with wave.open(io.BytesIO(data)) as wav:
        wav.setpos(wav.getnframes() - 2 * 8000)
        end = wav.readframes(2 * 8000)
    assert _channel(end, 0) > 100 and _channel(end, 1) > 100, (_channel(end, 0), _channel(end, 1))
    return kept


async def _agents_of(
    cell: Cell, line: Line, interaction_id: str
) -> tuple[mpb.Interaction, dict[str, mpb.Participant]]:
    """The interaction as it is now, and its agents' participants by agent id."""
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    it = await media.GetInteraction(
        mpb.GetInteractionRequest(tenant_id=line.tenant.id, interaction_id=interaction_id),
        metadata=(("authorization", f"Bearer {line.key}"),),
    )
    return it, {p.subject_id: p for p in it.participants if p.role == mpb.PARTICIPANT_ROLE_AGENT}


def _channel(frames: bytes, which: int) -> float:
    """The loudness (RMS) of one channel of 16-bit stereo frames."""
    samples = memoryview(frames).cast("h")[which::2]
    return (sum(x * x for x in samples) / max(1, len(samples))) ** 0.5


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_sip_port() -> int:
    """A port free for both UDP and TCP: baresip listens for SIP on both, and exits when
    either is taken."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _answered_call(line: Line, folder: Path) -> tuple[str, str, int, int]:
    """A caller presses 1, is answered by an agent's phone, talks and hangs up: the agent's
    leg as it ended (the interaction, the agent, the packets it received and sent)."""
    before = len(line.calls.phones.ended)
    await sipp("ivr_to_agent.xml", line.port, NUMBER, folder)
    async with asyncio.timeout(15):
        while len(line.calls.phones.ended) == before:
            await asyncio.sleep(0.1)
    return line.calls.phones.ended[-1]


async def test_a_caller_reaches_an_agents_phone_and_they_hear_each_other(
    line: Line, phone: Phone, cell: Cell, tmp_path: Path
) -> None:
    interaction, agent_id, agent_received, agent_sent = await _answered_call(line, tmp_path)
    call = line.calls.ended[-1]
    assert (call.interaction_id, agent_id) == (interaction, phone.agent_id)
    # Li's phone answered: the caller's voice reached it, and Li's voice reached the caller.
    assert agent_sent > 50, "the caller's audio did not reach the agent's phone"
    assert agent_received > 50, "the agent's phone sent no audio"
    assert call.received > 100 and call.sent > agent_received // 2
    await _wrap_up(cell, line, interaction)


async def test_an_agents_phone_over_tls_registers_and_answers(
    line: Line, phone: Phone, cell: Cell, tmp_path: Path
) -> None:
    """Qian's phone reaches the voice service over TLS only (SIP over TLS, RFC 3261 26.2,
    trusting the service's CA): it registers there, and a caller's call rings it on that
    connection, keyed for SRTP; once answered, the caller and Qian hear each other, the audio
    to and from Qian's phone encrypted."""
    await _presence(cell, line, phone.agent_id, apb.PRESENCE_AWAY)  # the call is Qian's
    qian = await _phone(
        line,
        cell,
        tmp_path,
        "qian.yu",
        "This is Qian, on a secure line.",
        42300,
        tls=True,
    )
    try:
        binding = line.calls.phones._bindings[(line.tenant.id, qian.agent_id)]
        assert binding.peer.transport == "TLS"
        answered = asyncio.create_task(_answered_call(line, tmp_path))
        async with asyncio.timeout(20):  # the call reached Qian's phone, which answered
            while not (
                legs := [g for g in line.calls.phones.legs.values() if g.agent_id == qian.agent_id]
            ):
                await asyncio.sleep(0.1)
        # Keyed over TLS, the phone's leg is SRTP: what Qian's phone decrypts, and what it
        # sends and the service decrypts, is all the audio counted below.
        assert legs[0].session.secured
        interaction, agent_id, agent_received, agent_sent = await answered
        assert agent_id == qian.agent_id
        assert agent_sent > 50, "the caller's audio did not reach Qian's phone"
        assert agent_received > 50, "Qian's phone sent no audio"
        await _wrap_up(cell, line, interaction)
    finally:
        await _sign_off(cell, line, qian)
        await _presence(cell, line, phone.agent_id, apb.PRESENCE_AVAILABLE)


async def test_an_agent_hands_a_call_to_a_colleague_from_the_phone(
    line: Line, phone: Phone, cell: Cell, tmp_path: Path
) -> None:
    """Li's phone holds the call and resumes it, then transfers it (REFER, as its user would)
    to Wang by name: Wang's phone rings and answers, the caller and Wang hear each other, Li's
    phone is let go, and when Wang hangs up the call ends, recorded whole."""
    folder = tmp_path / "wang"
    folder.mkdir()
    wang = await _phone(
        line, cell, folder, "wang.fang", "This is Wang from the card team.", 42100, False
    )
    try:
        started = asyncio.get_running_loop().time()
        caller = asyncio.create_task(sipp("transferred.xml", line.port, NUMBER, tmp_path))

        def agent_of(c: Call) -> str:
            return c.agent.agent_id if c.agent is not None else ""

        async with asyncio.timeout(20):  # the caller pressed 1 and Li's phone answered
            while not (
                call := next(
                    (c for c in line.calls._calls.values() if agent_of(c) == phone.agent_id), None
                )
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # they talk
        # Li holds the call (a re-INVITE, sendonly): the caller hears the hold notice, not
        # silence; Li resumes, and the notice stops.
        assert call.agent is not None
        leg, said = call.agent, call.session.sent
        await phone.command("hold")
        async with asyncio.timeout(10):
            while not (leg.session.held and call.hold is not None):
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        assert call.session.sent - said > 50, "the caller heard nothing while held"
        await phone.command("resume")
        async with asyncio.timeout(10):
            while leg.session.held or call.hold is not None:
                await asyncio.sleep(0.1)
        await _presence(cell, line, wang.agent_id, apb.PRESENCE_AVAILABLE)
        await phone.command("transfer", f"sip:wang.fang@127.0.0.1:{line.port}")
        async with asyncio.timeout(20):  # offered to Wang, whose phone answers
            while agent_of(call) != wang.agent_id:
                await asyncio.sleep(0.1)
        wang_leg = call.agent
        async with asyncio.timeout(15):  # Li's phone hung up, told the transfer went
            while not any(
                e[:2] == (call.interaction_id, phone.agent_id) for e in line.calls.phones.ended
            ):
                await asyncio.sleep(0.1)
        assert wang_leg is not None
        async with asyncio.timeout(15):  # the caller and Wang talk; the phone reports (RTCP)
            while wang_leg.session.peer_report is None:
                await asyncio.sleep(0.2)
        # Wang's phone says, by RTCP, that what the voice service sent it arrived whole.
        assert wang_leg.session.peer_report.lost == 0
        assert wang_leg.session.peer_report.highest > 50
        # Wang hangs up: the call ends for the caller too (a BYE the caller answers).
        await wang.command("hangup")
        async with asyncio.timeout(15):
            await caller
        lasted = asyncio.get_running_loop().time() - started
        async with asyncio.timeout(10):
            while not any(
                e[:2] == (call.interaction_id, wang.agent_id) for e in line.calls.phones.ended
            ):
                await asyncio.sleep(0.1)
        *_, received, sent = next(
            e for e in line.calls.phones.ended if e[:2] == (call.interaction_id, wang.agent_id)
        )
        # The caller's voice reached Wang's phone, and Wang's reached the caller's side.
        assert sent > 50 and received > 50, (sent, received)
        _, agents = await _agents_of(cell, line, call.interaction_id)
        assert set(agents) == {phone.agent_id, wang.agent_id}
        assert agents[phone.agent_id].HasField("leave_time")  # Li handed it on
        # The recording: the whole call, both sides in step; in its last two seconds the
        # caller on the left and Wang on the right.
        kept = await _ends_with_both_sides(cell, line, call.interaction_id)
        assert lasted * 1000 - 3_000 <= kept.duration_ms <= lasted * 1000, (kept, lasted)
        await _wrap_up(cell, line, call.interaction_id)
    finally:
        await _sign_off(cell, line, wang)


async def test_an_agent_consults_a_colleague_then_hands_them_the_call(
    line: Line, phone: Phone, cell: Cell, tmp_path: Path
) -> None:
    """Zhao's phone (SIPp) answers a call, holds it, calls Sun by name to consult, then hands
    Sun the call (REFER with Replaces, an attended transfer): Sun's phone does not ring
    again, the caller and Sun hear each other on the line Sun consulted on, Zhao's phone is
    told and hangs up, and the interaction shows Zhao left and Sun joined."""
    await _presence(cell, line, phone.agent_id, apb.PRESENCE_AWAY)  # the call is Zhao's
    zhao = await _agent_with_phone(line, cell, "zhao.lei")
    folder = tmp_path / "sun"
    folder.mkdir()
    sun = await _phone(
        line,
        cell,
        folder,
        "sun.li",
        "This is Sun from the card team.",
        42200,
        False,
        "opus/48000/2",
    )
    zhao_port = _free_udp_port()
    credentials = ("-au", f"zhao.lei@{line.tenant.name}", "-ap", PASSWORD)
    try:
        await sipp(
            "registered.xml", line.port, "zhao.lei", tmp_path, *credentials, local_port=zhao_port
        )
        await _presence(cell, line, zhao.id, apb.PRESENCE_AVAILABLE)
        zhao_phone = asyncio.create_task(
            sipp(
                "consulting.xml",
                line.port,
                "zhao.lei",
                tmp_path,
                *credentials,
                "-rtp_echo",
                "-mp",
                str(_free_udp_port()),
                local_port=zhao_port,
                values={"colleague": "sun.li", "consult_ms": "5000"},
            )
        )
        caller = asyncio.create_task(sipp("transferred.xml", line.port, NUMBER, tmp_path))
        async with asyncio.timeout(40):  # Zhao answered, held the call, and called Sun
            while not line.calls.phones.consults:
                await asyncio.sleep(0.1)
        consult = next(iter(line.calls.phones.consults.values()))
        colleague = consult.colleague
        assert (consult.agent_id, colleague.agent_id) == (zhao.id, sun.agent_id)
        # Sun's phone speaks Opus only; Zhao's phone and the caller, G.711.
        assert (colleague.session.codec.name, consult.session.codec) == ("opus", sdp.PCMU)
        call = next(
            c for c in line.calls._calls.values() if c.agent and c.agent.agent_id == zhao.id
        )
        assert call.agent is not None and call.agent.session.held
        await _presence(cell, line, sun.agent_id, apb.PRESENCE_AVAILABLE)
        async with asyncio.timeout(30):  # handed on: Sun's line is the caller's now
            while call.agent is not colleague:
                await asyncio.sleep(0.1)
        # Zhao and Sun heard each other while they consulted: Sun's voice reached Zhao's
        # phone, and Zhao's (its echo) came back.
        assert consult.session.sent > 50 and consult.session.figures.received > 50
        async with asyncio.timeout(20):  # Zhao's phone was told, its consult ended, it hung up
            await zhao_phone
        before = (colleague.session.figures.received, call.session.figures.received)
        await asyncio.sleep(2)  # the caller and Sun talk
        assert colleague.session.figures.received - before[0] > 50, "Sun was not heard"
        assert call.session.figures.received - before[1] > 50, "the caller was not heard"
        assert call.session.sent > 50
        await sun.command("hangup")
        async with asyncio.timeout(15):
            await caller
        # The recording ends with the caller on the left and Sun on the right: Sun's Opus,
        # decoded, is what the caller heard.
        await _ends_with_both_sides(cell, line, call.interaction_id)
        async with asyncio.timeout(10):
            while not any(e[1] == sun.agent_id for e in line.calls.phones.ended):
                await asyncio.sleep(0.1)
        # Sun's phone rang once, for the consult: that one line took the call.
        sun_legs = [e for e in line.calls.phones.ended if e[1] == sun.agent_id]
        assert [e[0] for e in sun_legs] == [call.interaction_id]
        _, agents = await _agents_of(cell, line, call.interaction_id)
        assert set(agents) == {zhao.id, sun.agent_id}
        assert agents[zhao.id].HasField("leave_time")
        await _wrap_up(cell, line, call.interaction_id)
    finally:
        await _sign_off(cell, line, sun)
        await _presence(cell, line, zhao.id, apb.PRESENCE_OFFLINE)
        await _presence(cell, line, phone.agent_id, apb.PRESENCE_AVAILABLE)


async def test_a_colleague_asked_to_stay_makes_a_conference_of_the_call(
    line: Line, phone: Phone, cell: Cell, tmp_path: Path
) -> None:
    """Li, on a call, asks He to join and stays (a consult from the desk: a transfer with
    stay): He's phone rings and answers, and the caller, Li and He each hear the other two.
    Li hangs up and leaves the conversation to He, who goes on talking with the caller; when
    He hangs up, the call ends."""
    he = await _phone(
        line, cell, tmp_path, "he.jun", "This is He from the loans team.", 42400, False
    )
    key = (("authorization", f"Bearer {line.key}"),)
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    try:
        caller = asyncio.create_task(sipp("transferred.xml", line.port, NUMBER, tmp_path))
        async with asyncio.timeout(20):  # the caller pressed 1 and Li's phone answered
            while not (
                call := next(
                    (
                        c
                        for c in line.calls._calls.values()
                        if c.agent and c.agent.agent_id == phone.agent_id
                    ),
                    None,
                )
            ):
                await asyncio.sleep(0.1)
        li = call.agent
        assert li is not None
        async with asyncio.timeout(10):
            while not li.participant_id:
                await asyncio.sleep(0.1)
        await _presence(cell, line, he.agent_id, apb.PRESENCE_AVAILABLE)
        await media.Transfer(
            mpb.TransferRequest(
                tenant_id=line.tenant.id,
                interaction_id=call.interaction_id,
                transfer=mpb.Transfer(
                    participant_id=li.participant_id, agent_id=he.agent_id, stay=True
                ),
            ),
            metadata=key,
        )
        async with asyncio.timeout(20):  # He's phone rang and answered: three on the line
            while not (call.others and call.conference is not None):
                await asyncio.sleep(0.1)
        he_leg = call.others[0]
        assert call.agent is li and not li.ended
        legs = (call.session, li.session, he_leg.session)
        sent = [s.sent for s in legs]
        heard = [s.figures.received for s in legs]
        await asyncio.sleep(2)  # the three talk
        # Each hears the other two (mixed), and each is heard.
        assert all(s.sent - before > 50 for s, before in zip(legs, sent, strict=True)), [
            s.sent - b for s, b in zip(legs, sent, strict=True)
        ]
        assert all(s.figures.received - before > 50 for s, before in zip(legs, heard, strict=True))
        # Li hangs up: Li leaves, and the caller and He go on, bridged as two.
        await phone.command("hangup")
        async with asyncio.timeout(15):
            while call.conference is not None or call.agent is not he_leg:
                await asyncio.sleep(0.1)
        async with asyncio.timeout(15):
            while True:
                it, agents = await _agents_of(cell, line, call.interaction_id)
                if agents[phone.agent_id].HasField("leave_time"):
                    break
                await asyncio.sleep(0.2)
        assert agents[phone.agent_id].leave_reason == "left"
        assert not agents[he.agent_id].HasField("leave_time")
        assert it.state == mpb.INTERACTION_STATE_CONNECTED
        # The ACD frees Li for the next call at once, while He still holds this one.
        acd = acd_rpc.AcdServiceStub(grpc.aio.insecure_channel(cell.address("acd")))

        def voice_in_use(agent_id: str, found: apb.ListAgentPresenceResponse) -> int:
            me = next(a for a in found.agents if a.agent_id == agent_id)
            return sum(m.in_use for m in me.load if m.media == common.MEDIA_TYPE_VOICE)

        async with asyncio.timeout(15):
            while True:
                found = await acd.ListAgentPresence(
                    apb.ListAgentPresenceRequest(tenant_id=line.tenant.id), metadata=key
                )
                if voice_in_use(phone.agent_id, found) == 0:
                    break
                await asyncio.sleep(0.2)
        assert voice_in_use(he.agent_id, found) == 1
        before = (he_leg.session.figures.received, call.session.figures.received)
        await asyncio.sleep(2)
        assert he_leg.session.figures.received - before[0] > 50, "He was not heard"
        assert call.session.figures.received - before[1] > 50, "the caller was not heard"
        await he.command("hangup")
        async with asyncio.timeout(15):
            await caller
        await _wrap_up(cell, line, call.interaction_id)
    finally:
        await _sign_off(cell, line, he)


async def _wrap_up(cell: Cell, line: Line, interaction_id: str) -> None:
    """The agent's wrap-up, as the desk closes it: the agent is free for the next call."""
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    await media.End(
        mpb.EndRequest(
            tenant_id=line.tenant.id,
            interaction_id=interaction_id,
            resolution=mpb.Resolution(code="resolved"),
        ),
        metadata=(("authorization", f"Bearer {line.key}"),),
    )


async def _sign_off(cell: Cell, line: Line, phone: Phone) -> None:
    """The agent signs out and their phone is switched off: later tests count on Li alone."""
    await _presence(cell, line, phone.agent_id, apb.PRESENCE_OFFLINE)
    phone.process.terminate()
    await phone.process.wait()


async def _presence(cell: Cell, line: Line, agent_id: str, presence: int) -> None:
    acd = acd_rpc.AcdServiceStub(grpc.aio.insecure_channel(cell.address("acd")))
    async with asyncio.timeout(30):
        while True:  # once the ACD has the agent from tenant.config
            try:
                await acd.SetPresence(
                    apb.SetPresenceRequest(
                        tenant_id=line.tenant.id, agent_id=agent_id, presence=presence
                    ),
                    metadata=(("authorization", f"Bearer {line.key}"),),
                )
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.3)


# Chromium's own microphone and camera stand-ins (a beep every second), without asking; and
# ICE candidates on loopback, where the voice service of these tests listens.
WEB_PHONE_FLAGS = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
)
# Every peer connection the page makes, kept where the test can read its figures.
KEEP_PEER_CONNECTIONS = """
const Made = window.RTCPeerConnection;
window.made = [];
window.RTCPeerConnection = function (...args) { const pc = new Made(...args);
  window.made.push(pc); return pc; };
window.RTCPeerConnection.prototype = Made.prototype;
"""
HEARD = """
const done = arguments[arguments.length - 1];
const pc = window.made[window.made.length - 1];
pc.getStats().then((all) => { let found = null;
  all.forEach((v) => { if (v.type === "inbound-rtp" && v.kind === "audio") found = v; });
  done(found && [found.packetsReceived, found.totalAudioEnergy]); });
"""


@contextlib.asynccontextmanager
async def _console(cell: Cell, line: Line) -> AsyncIterator[str]:
    """The console, calling this module's voice service for the phone in the browser."""
    env = {k.removeprefix("LIANLUO_").lower(): v for k, v in cell.env.items()}
    port = _free_tcp_port()
    settings = ConsoleSettings(
        **env,
        grpc_port=0,
        console_http_port=port,
        console_secure_cookies=False,
        **{f"console_{name}_address": cell.address(name) for name in
           ("tenants", "media", "ivr", "acd", "gateway")},
        console_voice_address=f"127.0.0.1:{line.voice.grpc.port}",
    )  # fmt: skip
    console = await build_console(settings)
    task = asyncio.create_task(console.serve())
    try:
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        console.request_stop()
        await task


async def test_an_agent_answers_in_the_browser_and_they_hear_each_other(
    line: Line, cell: Cell, tmp_path: Path
) -> None:
    """Lin signs in to the desk in Chromium and turns on the phone in the browser (WebRTC to
    the voice service). A caller presses 1; Lin accepts the call on the desk and the two talk:
    the browser plays the caller's voice, and the caller hears Lin's microphone (Chromium's
    stand-in, a beep), on the line and in the recording."""
    from test_console import PASSWORD, Page
    from test_web_chat import _browser

    if line.agent_id:  # Li's phone stays out of it
        await _presence(cell, line, line.agent_id, apb.PRESENCE_OFFLINE)
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    md = (("authorization", f"Bearer {line.key}"),)
    lin = await rpc.AgentServiceStub(tch).CreateAgent(
        pb.CreateAgentRequest(tenant_id=line.tenant.id, agent=agent("lin.hao")), metadata=md
    )
    await rpc.UserServiceStub(tch).CreateUser(
        pb.CreateUserRequest(
            tenant_id=line.tenant.id,
            user=user("lin", pb.ROLE_AGENT, agent="lin.hao"),
            password=PASSWORD,
        ),
        metadata=md,
    )
    _, stranger = await onboard(Client(tch, ADMIN_KEY))
    await tch.close()
    async with asyncio.timeout(30):  # until the voice service has Lin from tenant.config
        while line.calls.phones._view.get(line.tenant.id, "agent", lin.id) is None:
            await asyncio.sleep(0.2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{line.voice.grpc.port}") as vch:
        phones = voice_rpc.WebPhoneServiceStub(vch)
        refused = phones.OpenWebPhone(
            vpb.OpenWebPhoneRequest(tenant_id=line.tenant.id, agent_id=lin.id, sdp="v=0\r\n"),
            metadata=md,
        )
        assert bad_fields(await fails(refused, grpc.StatusCode.INVALID_ARGUMENT)) == {"sdp"}
        nobody = phones.CloseWebPhone(
            vpb.CloseWebPhoneRequest(tenant_id=line.tenant.id, agent_id="no-such-agent"),
            metadata=md,
        )
        await fails(nobody, grpc.StatusCode.NOT_FOUND)
        # Another tenant's key reaches no phone of this one.
        elsewhere = phones.OpenWebPhone(
            vpb.OpenWebPhoneRequest(tenant_id=line.tenant.id, agent_id=lin.id, sdp="m=audio"),
            metadata=stranger.md,
        )
        await fails(elsewhere, grpc.StatusCode.PERMISSION_DENIED)
    driver = await asyncio.to_thread(_browser, "1280,900", *WEB_PHONE_FLAGS)
    desk = Page(driver)
    try:
        async with _console(cell, line) as console:
            await desk.sign_in(console, line.tenant.name, "lin")
            await desk.run(KEEP_PEER_CONNECTIONS)
            await desk.click("#phone")
            await desk.until("return window.made.length && "
                             "window.made[0].connectionState === 'connected'")  # fmt: skip
            assert "calls you accept are heard here" in await desk.text()
            await desk.run(
                "const s = document.querySelector('#presence'); s.value = 'available';"
                "s.dispatchEvent(new Event('change', {bubbles: true}))"
            )
            before = len(line.calls.phones.ended)
            caller = asyncio.create_task(sipp("ivr_to_agent.xml", line.port, NUMBER, tmp_path))
            await desk.click(".offer .actions button")  # Lin accepts the call on the desk
            async with asyncio.timeout(20):
                while not any(leg.web for leg in line.calls.phones.legs.values()):
                    await asyncio.sleep(0.1)
            await asyncio.sleep(3)  # they talk
            packets, energy = await asyncio.to_thread(driver.execute_async_script, HEARD)
            await caller
            async with asyncio.timeout(15):
                while len(line.calls.phones.ended) == before:
                    await asyncio.sleep(0.1)
            interaction, agent_id, from_browser, to_browser = line.calls.phones.ended[-1]
            # The desk's phone is still on for the next call.
            assert (line.tenant.id, lin.id) in line.calls.phones.web
            await desk.click("#phone")
            async with asyncio.timeout(10):
                while (line.calls.phones.web.get((line.tenant.id, lin.id))) is not None:
                    await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(driver.quit)
    assert agent_id == lin.id
    # The browser received the caller's voice and played something of it.
    assert packets > 50 and energy > 0, (packets, energy)
    assert to_browser > 50, "the caller's audio did not reach the browser"
    assert from_browser > 50, "the browser's microphone did not reach the voice service"
    call = line.calls.ended[-1]
    assert call.interaction_id == interaction and call.sent > 50
    # The caller heard Lin's microphone: the recording's right side is not silent.
    await _ends_with_both_sides(cell, line, interaction)
    await _wrap_up(cell, line, interaction)
    await _presence(cell, line, lin.id, apb.PRESENCE_OFFLINE)


async def test_a_callback_is_dialled_through_the_trunk_when_the_agents_phone_answers(
    line: Line, phone: Phone, cell: Cell, tmp_path: Path
) -> None:
    """Nobody is free: the queue overflows to a callback, and the caller is told so. Once Li
    is available the ACD offers the callback, Li's phone answers, and the voice service calls
    the customer's number through the trunk (a SIPp receiver, echoing what it hears)."""
    await _presence(cell, line, phone.agent_id, apb.PRESENCE_AWAY)
    receiver = await asyncio.create_subprocess_exec(
        "sipp",
        "-sn",
        "uas",
        "-p",
        str(line.trunk),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-rtp_echo",
        "-m",
        "1",
        "-timeout",
        "90",
        "-nostdin",
        "-timeout_error",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        calls_before = len(line.calls.ended)
        await sipp("called_back.xml", line.port, CALLBACK_NUMBER, tmp_path)
        async with asyncio.timeout(10):
            while len(line.calls.ended) == calls_before:
                await asyncio.sleep(0.1)
        told = line.calls.ended[calls_before]
        # Li is back before the callback is due.
        await _presence(cell, line, phone.agent_id, apb.PRESENCE_AVAILABLE)
        async with asyncio.timeout(30):  # offered, answered by the phone, dialled, answered
            while line.calls.open_calls < 2:
                await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # they talk
        await _wrap_up(cell, line, told.interaction_id)
        async with asyncio.timeout(30):
            out, _ = await receiver.communicate()
        assert receiver.returncode == 0, out.decode(errors="replace")[:2500]
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
    called = line.calls.ended[-1]
    assert (called.interaction_id, called.tenant_id) == (told.interaction_id, line.tenant.id)
    # The phone's voice reached the customer, whose echo came back to the phone.
    interaction, _, agent_received, agent_sent = line.calls.phones.ended[-1]
    assert interaction == told.interaction_id
    assert agent_received > 50 and called.received > 50 and agent_sent > 50
