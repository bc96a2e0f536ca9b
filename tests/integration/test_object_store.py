"""The object store layer on both of its backends: a local directory, and S3 through a local
S3-compatible server (moto's server mode) started here. What is stored comes back whole, a
changed object is refused on read by its sha256, and links open only as signed and in time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from lianluo.runtime.objects import CorruptObject, Links, Objects, tenant_key
from lianluo.runtime.settings import ObjectStoreSettings

BUCKET = "lianluo-test"
Tamper = Callable[[str, bytes], None]


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    _client(url).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _client(url: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    )


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Objects, Tamper]:
    if request.param == "directory":

        def tamper_file(key: str, data: bytes) -> None:
            (tmp_path / key).write_bytes(data)

        return Objects(ObjectStoreSettings(object_store_path=str(tmp_path))), tamper_file
    url = request.getfixturevalue("s3")
    settings = ObjectStoreSettings(
        object_store_bucket=BUCKET,
        object_store_endpoint=url,
        object_store_access_key_id="test-key",
        object_store_secret_access_key="test-secret",
    )
    client = _client(url)

    def tamper_object(key: str, data: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=data)  # type: ignore[attr-defined]

    return Objects(settings), tamper_object


async def test_an_object_comes_back_whole_and_a_changed_one_is_refused(
    store: tuple[Objects, Tamper],
) -> None:
    objects, tamper = store
    data = bytes(range(256)) * 4096  # 1 MiB
    key = tenant_key("t-1", "attachments", "a-1")
    stored = await objects.put(key, data, "application/octet-stream")
    assert (stored.key, stored.size) == ("tenants/t-1/attachments/a-1", len(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await objects.get(key, stored.sha256) == data
    tamper(key, data[:-1] + b"\x00")
    with pytest.raises(CorruptObject):
        await objects.get(key, stored.sha256)
    await objects.delete(key)
    with pytest.raises(FileNotFoundError):
        await objects.get(key, stored.sha256)


def test_a_link_opens_only_its_path_with_its_signature_until_it_expires() -> None:
    links = Links("a cell admin key of enough length")
    signed = links.sign("/v1/attachments/t/a", 60, now=1_000)
    path, _, query = signed.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert links.opens(path, params["expires"], params["signature"], now=1_059)
    assert not links.opens(path, params["expires"], params["signature"], now=1_061)
    assert not links.opens("/v1/attachments/t/b", params["expires"], params["signature"], now=1_000)
    assert not links.opens(path, str(int(params["expires"]) + 600), params["signature"], now=1_000)
    other = Links("another cell's admin key, as long")
    assert not other.opens(path, params["expires"], params["signature"], now=1_000)
