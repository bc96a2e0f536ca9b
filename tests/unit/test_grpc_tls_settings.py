"""The LIANLUO_GRPC_TLS_* settings refuse, at the start and by name, what could not work.

The servers and channels they make meet each other in
tests/integration/test_service_process.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from tls_files import issue, make_ca

from lianluo.runtime.grpc_server import server_credentials
from lianluo.runtime.settings import GrpcTlsSettings


@pytest.fixture(autouse=True)
def no_lianluo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIANLUO_"):
            monkeypatch.delenv(name)


def refusals(**values: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as raised:
        GrpcTlsSettings(**values)  # type: ignore[arg-type]
    return {str(e["loc"][0]): e["msg"] for e in raised.value.errors()}


def test_plaintext_by_default() -> None:
    assert server_credentials(GrpcTlsSettings()) is None


def test_a_certificate_goes_with_its_own_key(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "platform")
    one, other = issue(ca, tmp_path, "one", dns="a.test"), issue(ca, tmp_path, "two", dns="b.test")
    assert "set both or neither" in refusals(grpc_tls_cert_file=str(one.cert))["grpc_tls_key_file"]
    assert "set both or neither" in refusals(grpc_tls_key_file=str(one.key))["grpc_tls_key_file"]
    wrong = refusals(grpc_tls_cert_file=str(one.cert), grpc_tls_key_file=str(other.key))
    assert "is not the key of LIANLUO_GRPC_TLS_CERT_FILE" in wrong["grpc_tls_key_file"]
    assert (
        "no such file"
        in refusals(grpc_tls_ca_file=str(tmp_path / "absent.crt"))["grpc_tls_ca_file"]
    )
    settings = GrpcTlsSettings(grpc_tls_cert_file=str(one.cert), grpc_tls_key_file=str(one.key))
    assert server_credentials(settings) is not None


def test_mutual_tls_needs_the_ca_and_the_services_own_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "platform")
    own = issue(ca, tmp_path, "own", dns="lianluo.internal", client=True)
    refused = refusals(grpc_tls_client_auth=True, grpc_tls_ca_file=str(ca.path))
    assert "mutual TLS needs" in refused["grpc_tls_client_auth"]
    GrpcTlsSettings(
        grpc_tls_client_auth=True,
        grpc_tls_ca_file=str(ca.path),
        grpc_tls_cert_file=str(own.cert),
        grpc_tls_key_file=str(own.key),
    )
    assert "grpc_tls_server_name" in refusals(grpc_tls_server_name="not a name!")
