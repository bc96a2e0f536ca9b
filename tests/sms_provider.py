"""A local SMS provider that speaks the Twilio-compatible API: the Messages API keeps what is
sent and refuses bad account credentials, and `signed` makes the signature the provider puts
on its webhooks (its published algorithm)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import ClientSession, web

SID, TOKEN = "AC" + "1" * 32, "provider-token-" + uuid.uuid4().hex


def signed(url: str, form: dict[str, str], token: str = TOKEN) -> str:
    """What the provider sends as X-Twilio-Signature."""
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass
class Provider:
    """The SMS provider's Messages API: keeps what the gateway sends, refuses bad credentials."""

    port: int = 0
    sent: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)
    refused: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def messages(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.match_info["sid"] != SID or request.headers.get("Authorization") != expected:
            self.refused += 1
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        form = {k: str(v) for k, v in (await request.post()).items()}
        sid = "SM" + uuid.uuid4().hex
        # Kept with what was sent, so a test can report on the message as the provider would.
        await self.sent.put({**form, "Sid": sid})
        return web.json_response({"sid": sid, "status": "queued"}, status=201)

    async def report(self, sent: dict[str, str], status: str, error_code: str = "") -> int:
        """Post the status callback of a sent message, signed, as the provider does."""
        form = {"MessageSid": sent["Sid"], "MessageStatus": status, "To": sent["To"]}
        if error_code:
            form["ErrorCode"] = error_code
        url = sent["StatusCallback"]
        headers = {"X-Twilio-Signature": signed(url, form)}
        async with ClientSession() as http, http.post(url, data=form, headers=headers) as answer:
            return answer.status


@asynccontextmanager
async def sms_provider() -> AsyncIterator[Provider]:
    p = Provider()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", p.messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    p.port = runner.addresses[0][1]
    try:
        yield p
    finally:
        await runner.cleanup()
