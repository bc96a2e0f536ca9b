"""One storage layer for objects (attachments, audio, exports): obstore, which speaks to the
local filesystem and to S3-compatible stores through one API, with its retries and multipart
uploads. Every object is stored with its sha256, which each read checks, and is reached from
outside only through a link signed for a short time.

Keys start with the tenant's id, so one tenant's objects never share a prefix with another's.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
from obstore.store import LocalStore, S3Store

from lianluo.runtime.settings import ObjectStoreSettings


class CorruptObject(Exception):
    """An object whose bytes no longer match the sha256 recorded when it was stored."""


@dataclass(frozen=True)
class Stored:
    key: str
    sha256: str
    size: int


def tenant_key(tenant_id: str, *parts: str) -> str:
    return "/".join(["tenants", tenant_id, *parts])


def attachment_key(tenant_id: str, attachment_id: str) -> str:
    """Where a file the channel gateway kept ("attachment:<id>") is."""
    return tenant_key(tenant_id, "attachments", attachment_id)


def attachment_path(tenant_id: str, attachment_id: str) -> str:
    """The gateway's route that opens a kept file, given a signed link."""
    return f"/v1/attachments/{tenant_id}/{attachment_id}"


def object_path(key: str, sha256: str) -> str:
    """The gateway's route that opens any object of the store, given a signed link: the
    sha256 is in the signed path, so the object is checked against it on the way out."""
    return f"/v1/objects/{sha256}/{key}"


def stored_key(tenant_id: str, uri: str) -> str | None:
    """The store's key of a media URI the platform stored: "object:<key>" (a call's audio) or
    "attachment:<id>" (a file the gateway kept). None for anything else (an https URL), and
    for a key outside the tenant's own prefix."""
    if uri.startswith("object:"):
        key = uri.removeprefix("object:")
    elif uri.startswith("attachment:"):
        key = attachment_key(tenant_id, uri.removeprefix("attachment:"))
    else:
        return None
    inside = key.startswith(tenant_key(tenant_id, "")) and ".." not in key.split("/")
    return key if inside else None


class Objects:
    """A bucket (S3-compatible) or a local directory, as the settings say."""

    def __init__(self, settings: ObjectStoreSettings) -> None:
        self._store: Any
        if settings.object_store_bucket:
            endpoint = settings.object_store_endpoint
            options: dict[str, Any] = {"allow_http": endpoint.startswith("http://")}
            config: dict[str, Any] = {"region": settings.object_store_region}
            if endpoint:
                config["endpoint"] = endpoint
            if settings.object_store_access_key_id:
                config["access_key_id"] = settings.object_store_access_key_id
                config["secret_access_key"] = (
                    settings.object_store_secret_access_key.get_secret_value()
                )
            self._store = S3Store(
                settings.object_store_bucket,
                config=config,  # type: ignore[arg-type]
                client_options=options,  # type: ignore[arg-type]
            )
            self.where = f"s3://{settings.object_store_bucket}"
        else:
            path = Path(settings.object_store_path).resolve()
            path.mkdir(parents=True, exist_ok=True)
            self._store = LocalStore(prefix=path)
            self.where = f"file://{path}"

    async def put(self, key: str, data: bytes, content_type: str = "") -> Stored:
        attributes = {"Content-Type": content_type} if content_type and self._s3 else None
        await obstore.put_async(self._store, key, data, attributes=attributes)
        return Stored(key, hashlib.sha256(data).hexdigest(), len(data))

    async def get(self, key: str, sha256: str) -> bytes:
        """The object's bytes, refused when they differ from what was stored."""
        found = bytes(await (await obstore.get_async(self._store, key)).bytes_async())
        if not hmac.compare_digest(hashlib.sha256(found).hexdigest(), sha256):
            raise CorruptObject(key)
        return found

    async def delete(self, key: str) -> None:
        await obstore.delete_async(self._store, key)

    async def absent(self, key: str) -> bool:
        """True when the store has nothing under `key` (how a deletion is verified)."""
        try:
            await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return True
        return False

    @property
    def _s3(self) -> bool:
        return isinstance(self._store, S3Store)


class Links:
    """Links to an object that expire: the path and the expiry, signed with a key every replica
    of the cell derives from the cell's admin key, so a link signed by one replica opens on any
    other and no new secret has to be handed out."""

    def __init__(self, admin_key: str, base_url: Callable[[], str] = str) -> None:
        self._key = hmac.new(admin_key.encode(), b"lianluo object links v1", "sha256").digest()
        # The server's public base URL, read when a link is made (a port may be known late).
        self._base_url = base_url

    def _mac(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), "sha256").hexdigest()

    def sign(self, path: str, seconds: int, now: float | None = None) -> str:
        """`path` with the query that opens it for `seconds`."""
        expires = int((time.time() if now is None else now) + seconds)
        return f"{path}?expires={expires}&signature={self._mac(path, expires)}"

    def url(self, path: str, seconds: int) -> str:
        """The absolute link to `path` that opens it for `seconds`."""
        return self._base_url() + self.sign(path, seconds)

    def opens(self, path: str, expires: str, signature: str, now: float | None = None) -> bool:
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._mac(path, int(expires)), signature)

    def admits(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether a request for `path` (as the server reads it) carries a valid signature."""
        return self.opens(path, query.get("expires", ""), query.get("signature", ""))
