"""SIP over UDP and TCP (RFC 3261): reading and writing messages, and the transactions.

Messages are parsed and written by `sipmessage` (the aiortc author's library); what no
maintained asyncio library does well is here: the transports, the server transactions that
answer a retransmitted request with the response already sent and retransmit a final response
to an INVITE until its ACK (timers G and H; the 2xx too, which RFC 3261 gives the UAS core),
and the client transactions of the requests this side sends (timers E and F).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sipmessage import URI, Address, CSeq, Message, Parameters, Request, Response, Via

from lianluo.runtime.logs import get_logger

log = get_logger(__name__)
T1, T2 = 0.5, 4.0
# Timers H, F and J: how long a transaction waits for its ACK or answer, or stays to absorb
# retransmissions.
WAIT = 64 * T1
MAX_MESSAGE = 16_384
# Seconds a peer refused for want of room (503) waits before trying again.
RETRY_AFTER = "5"
MAGIC = "z9hG4bK"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER"
# Headers a request needs before anything can be answered to it.
NEEDED = ("via", "from", "to", "call-id", "cseq")
PHRASES = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    403: "Forbidden",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class SipError(ValueError):
    """Bytes that are not a SIP message this side can read."""


def read(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE:
        raise SipError("message too large")
    try:
        message = Message.parse(data)
        # Read every header a transaction needs now: a bad one is this message's fault.
        if isinstance(message, Request):
            missing = [h for h in NEEDED if not message.headers.get(h)]
            if missing:
                raise SipError(f"missing {', '.join(missing)}")
            if message.cseq.method != message.method:
                raise SipError("CSeq method differs from the request's")
            _ = (message.via[0].parameters, message.from_address, message.to_address)
        else:
            _ = (message.via, message.cseq)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError) as error:
        raise SipError(str(error)[:200]) from None
    return message


def tag() -> str:
    return secrets.token_hex(6)


def branch() -> str:
    return MAGIC + secrets.token_hex(8)


def reply(
    request: Request,
    code: int,
    *,
    to_tag: str = "",
    body: bytes = b"",
    content_type: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    """The response to `request`: its Via, From, Call-ID and CSeq, and its To with `to_tag`."""
    response = Response(code, PHRASES.get(code, "Unknown"), body)
    response.via = request.via
    response.from_address = request.from_address
    to = request.to_address
    if to_tag and "tag" not in to.parameters:
        to = Address.parse(f"{to};tag={to_tag}")
    response.to_address = to
    response.call_id = request.call_id
    response.cseq = request.cseq
    for name, value in (headers or {}).items():
        response.headers.add(name, value)
    if content_type:
        response.headers.add("Content-Type", content_type)
    response.content_length = len(body)
    return response


def bare_reply(data: bytes, code: int) -> bytes | None:
    """A response to bytes `sipmessage` could not read, when they carry enough headers to be
    answered (RFC 3261 16.3: a malformed request gets a 400); None when they do not."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    first = lines[0].split(" ")
    if len(first) != 3 or not first[2].startswith("SIP/2.0") or first[0] == "ACK":
        return None
    found: dict[str, list[str]] = {}
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            key = compact.get(name.strip().lower(), name.strip().lower())
            found.setdefault(key, []).append(value.strip())
    if not all(found.get(h) for h in NEEDED):
        return None
    out = [f"SIP/2.0 {code} {PHRASES[code]}"]
    out += [f"Via: {v}" for v in found["via"]]
    names = {"from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
    out += [f"{names[h]}: {found[h][0]}" for h in names]
    out += ["Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()


@dataclass(frozen=True)
class Peer:
    """Where a message came from, and how to send back."""

    transport: str  # "UDP", "TCP" or "TLS"
    host: str
    port: int
    send: Callable[[bytes], None]

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


def _key(message: Message) -> tuple[str, str]:
    """A transaction's key: the top Via's branch, and the method (an ACK or a CANCEL of an
    INVITE goes with it by the branch)."""
    via = message.via[0]
    method = message.cseq.method
    return str(via.parameters.get("branch") or ""), "INVITE" if method == "ACK" else method


@dataclass
class ServerTransaction:
    request: Request
    peer: Peer
    last: bytes = b""
    final: bool = False
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    _retransmit: asyncio.Task[None] | None = None

    def respond(self, response: Response) -> None:
        self.last = bytes(response)
        self.peer.send(self.last)
        if response.code >= 200:
            self.final = True
            # An INVITE's final answer is sent again until its ACK arrives (unreliable only).
            if self.request.method == "INVITE" and not self.peer.reliable:
                self._retransmit = asyncio.get_running_loop().create_task(self._again())

    async def _again(self) -> None:
        interval = T1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT):
                while not self.acked.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.acked.wait(), interval)
                        return
                    self.peer.send(self.last)
                    interval = min(interval * 2, T2)

    def stop(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()


Handler = Callable[[Request, ServerTransaction], Awaitable[None]]


class Endpoint:
    """One SIP address over UDP and TCP, and TLS on a port of its own when given a context: it
    keeps the transactions, answers retransmissions from them, and passes each new request to
    the handler."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        tls: ssl.SSLContext | None = None,
        tls_port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.tls_port = tls_port
        self._tls_context = tls
        self._tls: asyncio.Server | None = None
        self._handler = handler
        self._server: dict[tuple[str, str], ServerTransaction] = {}
        # Call-ID and CSeq number -> the INVITE transaction waiting for its ACK.
        self._awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}
        self._client: dict[str, asyncio.Future[Response]] = {}
        self._heard: dict[str, asyncio.Event] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ transports

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        endpoint = self

        class Datagrams(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                assert endpoint._udp is not None
                udp = endpoint._udp
                peer = Peer("UDP", addr[0], addr[1], lambda b: udp.sendto(b, addr))
                endpoint.received(data, peer)

        # UDP and TCP on one port. Asked for any port (0), the one UDP gets may be taken for
        # TCP already: another is tried then.
        chosen = self.port
        for attempt in range(20):
            self._udp, _ = await loop.create_datagram_endpoint(
                Datagrams, local_addr=(self.host, chosen)
            )
            port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._stream, self.host, port)
            except OSError:
                self._udp.close()
                if chosen or attempt == 19:
                    raise
                continue
            self.port = port
            break
        if self._tls_context is not None:
            self._tls = await asyncio.start_server(
                lambda r, w: self._stream(r, w, "TLS"),
                self.host,
                self.tls_port,
                ssl=self._tls_context,
                ssl_handshake_timeout=10,
            )
            self.tls_port = self._tls.sockets[0].getsockname()[1]

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str = "TCP"
    ) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer(transport, host, port, writer.write)
        try:
            while not self._stopping.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_MESSAGE:
                    break
                found = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)\s*$", head)
                length = int(found.group(1)) if found else 0
                if length > MAX_MESSAGE:
                    break
                body = await reader.readexactly(length) if length else b""
                self.received(head + body, peer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            log.debug("a SIP connection ended", peer=f"{host}:{port}")  # the peer went away
        finally:
            writer.close()

    def contact(self, host: str, peer: Peer | None = None) -> str:
        """This endpoint's address as `host` publishes it, for Contact and From: over TLS
        when `peer` reached it over TLS, so that the dialog's requests stay there."""
        if peer is not None and peer.transport == "TLS":
            return f"<sip:voice@{host}:{self.tls_port};transport=tls>"
        return f"<sip:voice@{host}:{self.port}>"

    def peer(self, host: str, port: int) -> Peer:
        """A peer this side sends to first (a trunk), over UDP."""
        udp = self._udp
        assert udp is not None
        return Peer("UDP", host, port, lambda b: udp.sendto(b, (host, port)))

    async def run(self) -> None:
        await self._stopping.wait()

    def stop(self) -> None:
        self._stopping.set()
        if self._udp is not None:
            self._udp.close()
        for server in (self._tcp, self._tls):
            if server is not None:
                server.close()
        for task in self._tasks:
            task.cancel()

    # ------------------------------------------------------------------ messages in

    def received(self, data: bytes, peer: Peer) -> None:
        if not data.strip():
            return  # a keep-alive
        try:
            message = read(data)
        except SipError as error:
            answer = bare_reply(data, 400)
            if answer is not None:
                peer.send(answer)
            log.info("unreadable SIP message", reason=str(error), transport=peer.transport)
            return
        if isinstance(message, Response):
            self._answered(message)
            return
        assert isinstance(message, Request)
        if message.method == "ACK":
            self._ack(message)
            return
        key = _key(message)
        known = self._server.get(key)
        if known is not None:
            if known.last:
                peer.send(known.last)  # a retransmission: the answer already given
            return
        tx = ServerTransaction(message, peer)
        self._server[key] = tx
        if message.method == "INVITE":
            self._awaiting_ack[(message.call_id, message.cseq.sequence)] = tx
        self._spawn(self._serve(tx, key))

    def _ack(self, ack: Request) -> None:
        tx = self._awaiting_ack.pop((ack.call_id, ack.cseq.sequence), None)
        if tx is not None:
            tx.acked.set()
            tx.stop()

    def invite_of(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL names (the same branch)."""
        return self._server.get((_key(cancel)[0], "INVITE"))

    async def _serve(self, tx: ServerTransaction, key: tuple[str, str]) -> None:
        try:
            await self._handler(tx.request, tx)
        except Exception:
            log.exception("SIP request failed", method=tx.request.method)
            if not tx.final:
                tx.respond(reply(tx.request, 500))
        # The transaction stays a while to absorb retransmissions (timer J, or H for INVITE).
        await asyncio.sleep(WAIT)
        self._server.pop(key, None)
        self._awaiting_ack.pop((tx.request.call_id, tx.request.cseq.sequence), None)
        tx.stop()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ requests out

    def _answered(self, response: Response) -> None:
        key = str(response.via[0].parameters.get("branch") or "")
        if (heard := self._heard.get(key)) is not None:
            heard.set()  # a provisional answer: the request arrived, stop sending it again
        wanted = self._client.get(key)
        if wanted is not None and not wanted.done() and response.code >= 200:
            wanted.set_result(response)

    async def request(self, request: Request, peer: Peer, wait: float = WAIT) -> Response | None:
        """Send a request and give its final response, or None when none came in time
        (timer F, or `wait` for an INVITE's answer). Over UDP it is sent again at T1, 2·T1, ...
        up to T2 (timers A and E) until any response arrives; an INVITE's 2xx needs the caller's
        own ACK (`ack`)."""
        via_branch = branch()
        port = self.tls_port if peer.transport == "TLS" else self.port
        request.via = [Via(peer.transport, self.host, port, Parameters(branch=via_branch))]
        request.content_length = len(request.body)
        data = bytes(request)
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        heard = asyncio.Event()
        self._client[via_branch] = answer
        self._heard[via_branch] = heard
        interval = T1
        try:
            async with asyncio.timeout(wait):
                while not answer.done():
                    if not heard.is_set():
                        peer.send(data)
                    done, _ = await asyncio.wait({answer}, timeout=interval)
                    if done:
                        break
                    interval = min(interval * 2, T2) if not peer.reliable else wait
            final = answer.result()
        except TimeoutError:
            return None
        finally:
            self._client.pop(via_branch, None)
            self._heard.pop(via_branch, None)
        if request.method == "INVITE" and final.code >= 300:
            self.ack(request, final, peer)  # a failure is ACKed in its transaction
        return final

    def ack(self, invite: Request, final: Response, peer: Peer) -> None:
        """The ACK of an INVITE's final response: for a 2xx a request of its own (a new
        branch), for a failure the INVITE's branch (RFC 3261 17.1.1.3)."""
        ack = Request("ACK", invite.uri)
        ack.call_id = invite.call_id
        ack.cseq = CSeq(invite.cseq.sequence, "ACK")
        ack.from_address = invite.from_address
        ack.to_address = final.to_address
        ack.max_forwards = 70
        ack.via = (
            invite.via
            if final.code >= 300
            else [
                Via(
                    invite.via[0].transport,
                    self.host,
                    self.tls_port if invite.via[0].transport == "TLS" else self.port,
                    Parameters(branch=branch()),
                )
            ]
        )
        ack.content_length = 0
        peer.send(bytes(ack))


def new_request(method: str, target: str, call_id: str, cseq: int, from_: str, to: str) -> Request:
    request = Request(method, URI.parse(target))
    request.call_id = call_id
    request.cseq = CSeq(cseq, method)
    request.from_address = Address.parse(from_)
    request.to_address = Address.parse(to)
    request.max_forwards = 70
    return request


def refer_target(header: str) -> str:
    """The user part of a Refer-To ("<sip:wang.fang@host>" gives "wang.fang"); empty when it
    names none."""
    found = re.match(r"\s*<?\s*sips?:([^@;>?\s]+)@[^>]*>?", header)
    return "" if found is None else urllib.parse.unquote(found.group(1))


@dataclass(frozen=True)
class Replaces:
    """The dialog an attended transfer's Refer-To names (RFC 3891): the one to take over."""

    call_id: str
    to_tag: str
    from_tag: str


def replaces(header: str) -> Replaces | None:
    """The Replaces of a Refer-To ("<sip:bob@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
    escaped as a URI header; None when it has none (a blind transfer) or it lacks a tag."""
    uri = header.strip().removeprefix("<").partition(">")[0]
    query = uri.partition("?")[2]
    value = next((v for k, v in urllib.parse.parse_qsl(query) if k.lower() == "replaces"), None)
    if not value:
        return None
    call_id, *parameters = value.split(";")
    found = dict(p.strip().partition("=")[::2] for p in parameters)
    to_tag, from_tag = found.get("to-tag", ""), found.get("from-tag", "")
    if not (call_id.strip() and to_tag and from_tag):
        return None
    return Replaces(call_id.strip(), to_tag, from_tag)


@dataclass
class Dialog:
    """What a request of this side in a dialog needs: where it goes, as whom, to whom,
    through which peer, and the next CSeq of this side."""

    call_id: str
    target: str
    local: str
    remote: str
    peer: Peer
    cseq: int = 1

    def request(self, method: str) -> Request:
        """This side's next request in the dialog."""
        made = new_request(method, self.target, self.call_id, self.cseq, self.local, self.remote)
        self.cseq += 1
        return made
