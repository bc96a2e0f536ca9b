"""How a service reaches a secured Kafka: the LIANLUO_KAFKA_* security settings, refused at the
start when they cannot work (naming the variable), and the client arguments made from them.

The clients themselves meet a real broker over TLS in tests/integration/test_kafka_tls_sasl.py.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError
from tls_files import issue, make_ca

from lianluo import cli
from lianluo.runtime.kafka import client_security
from lianluo.runtime.settings import KafkaSecuritySettings, ServiceSettings

PASSWORD = "kafka-secret-for-unit-tests"


@pytest.fixture(autouse=True)
def no_lianluo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIANLUO_"):
            monkeypatch.delenv(name)


def security(**values: object) -> KafkaSecuritySettings:
    return KafkaSecuritySettings(**values)  # type: ignore[arg-type]


def refusals(**values: object) -> dict[str, str]:
    """The refused settings, by name, and why."""
    with pytest.raises(ValidationError) as raised:
        security(**values)
    return {str(e["loc"][0]): e["msg"] for e in raised.value.errors()}


SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "lianluo",
    "kafka_sasl_password": PASSWORD,
}


# ---------------------------------------------------------------- settings


def test_by_default_clients_speak_plaintext_as_to_the_local_broker() -> None:
    assert security().kafka_security_protocol == "PLAINTEXT"
    assert client_security(security()) == {"security_protocol": "PLAINTEXT"}
    assert client_security(None) == {}


def test_the_settings_are_read_from_lianluo_kafka_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIANLUO_DATABASE_URL", "postgresql://db/lianluo")
    monkeypatch.setenv("LIANLUO_KAFKA_BOOTSTRAP_SERVERS", "b-1.kafka:9096")
    monkeypatch.setenv("LIANLUO_ADMIN_KEY", "k3y-for-unit-tests-0123456789")
    monkeypatch.setenv("LIANLUO_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")  # any case, as Kafka
    monkeypatch.setenv("LIANLUO_KAFKA_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("LIANLUO_KAFKA_SASL_USERNAME", "lianluo")
    monkeypatch.setenv("LIANLUO_KAFKA_SASL_PASSWORD", PASSWORD)

    s = ServiceSettings()  # type: ignore[call-arg]

    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert s.kafka_sasl_username == "lianluo"
    assert s.kafka_sasl_password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_a_username_or_password_is_refused(protocol: str) -> None:
    refused = refusals(kafka_security_protocol=protocol)

    assert set(refused) == {"kafka_sasl_username", "kafka_sasl_password"}
    assert (
        f"required when LIANLUO_KAFKA_SECURITY_PROTOCOL is {protocol}"
        in refused["kafka_sasl_username"]
    )
    assert set(refusals(**{**SASL, "kafka_sasl_password": ""})) == {"kafka_sasl_password"}


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_credentials_the_protocol_would_never_send_are_refused(protocol: str) -> None:
    refused = refusals(**{**SASL, "kafka_security_protocol": protocol})

    assert set(refused) == {"kafka_sasl_username", "kafka_sasl_password"}
    assert (
        f"LIANLUO_KAFKA_SECURITY_PROTOCOL {protocol} sends no SASL"
        in refused["kafka_sasl_username"]
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kafka_security_protocol", "SASL"),
        ("kafka_security_protocol", "TLS"),
        # Kerberos and OAuth need more than a password; the runtime does not offer them.
        ("kafka_sasl_mechanism", "GSSAPI"),
        ("kafka_sasl_mechanism", "OAUTHBEARER"),
    ],
)
def test_an_unknown_protocol_or_mechanism_is_refused(name: str, value: str) -> None:
    assert name in refusals(**{**SASL, name: value})


def test_a_ca_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "ca.crt"
    refused = refusals(kafka_security_protocol="SSL", kafka_ssl_ca_file=str(missing))

    assert refused == {"kafka_ssl_ca_file": f"Value error, no such file: {missing}"}


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "ca.crt"
    junk.write_text("not a certificate\n")

    refused = refusals(kafka_security_protocol="SSL", kafka_ssl_ca_file=str(junk))

    assert "holds no CA certificate in PEM" in refused["kafka_ssl_ca_file"]


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_tls_are_refused(protocol: str, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "kafka-ca")
    values = {**SASL, "kafka_security_protocol": protocol}
    if protocol == "PLAINTEXT":
        values = {"kafka_security_protocol": protocol}

    refused = refusals(**values, kafka_ssl_ca_file=str(ca.path))

    assert set(refused) == {"kafka_ssl_ca_file"}
    assert (
        f"LIANLUO_KAFKA_SECURITY_PROTOCOL {protocol} does not use TLS"
        in refused["kafka_ssl_ca_file"]
    )


def test_a_client_certificate_needs_its_own_key(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "kafka-ca")
    mine = issue(ca, tmp_path, "lianluo", client=True)
    other = issue(ca, tmp_path, "someone-else", client=True)
    tls = {"kafka_security_protocol": "SSL"}

    assert set(refusals(**tls, kafka_ssl_cert_file=str(mine.cert))) == {"kafka_ssl_key_file"}
    assert set(refusals(**tls, kafka_ssl_key_file=str(mine.key))) == {"kafka_ssl_key_file"}
    mismatched = refusals(
        **tls, kafka_ssl_cert_file=str(mine.cert), kafka_ssl_key_file=str(other.key)
    )
    assert "is not the key of LIANLUO_KAFKA_SSL_CERT_FILE" in mismatched["kafka_ssl_key_file"]
    missing = refusals(**tls, kafka_ssl_cert_file=str(tmp_path / "none.crt"))
    assert missing == {"kafka_ssl_cert_file": f"Value error, no such file: {tmp_path}/none.crt"}


def test_the_command_names_the_refused_variable_and_stops_with_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIANLUO_DATABASE_URL", "postgresql://db/lianluo")
    monkeypatch.setenv("LIANLUO_KAFKA_BOOTSTRAP_SERVERS", "b-1.kafka:9096")
    monkeypatch.setenv("LIANLUO_ADMIN_KEY", "k3y-for-unit-tests-0123456789")
    monkeypatch.setenv("LIANLUO_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LIANLUO_KAFKA_SASL_USERNAME", "lianluo")

    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "tenants"])

    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "lianluo tenants: bad configuration:" in err
    assert (
        "LIANLUO_KAFKA_SASL_PASSWORD: Value error, required when "
        "LIANLUO_KAFKA_SECURITY_PROTOCOL is SASL_SSL" in err
    )
    assert "Traceback" not in err


# ---------------------------------------------------------------- client arguments


def test_sasl_ssl_gives_the_credentials_and_a_context_that_checks_the_broker(
    tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path, "kafka-ca")

    options = client_security(security(**SASL, kafka_ssl_ca_file=str(ca.path)))

    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "lianluo",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # The CA given, and no other: a broker it did not sign is refused.
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka-ca"),),)]


def test_sasl_plaintext_gives_credentials_and_no_tls() -> None:
    options = client_security(security(**{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT"}))

    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_plain_username"] == "lianluo"
    assert "ssl_context" not in options


def test_ssl_without_a_ca_file_trusts_the_system_store() -> None:
    options = client_security(security(kafka_security_protocol="SSL"))

    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert options["ssl_context"].check_hostname


def test_a_client_certificate_goes_into_the_context(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "kafka-ca")
    mine = issue(ca, tmp_path, "lianluo", client=True)

    options = client_security(
        security(
            kafka_security_protocol="SSL",
            kafka_ssl_ca_file=str(ca.path),
            kafka_ssl_cert_file=str(mine.cert),
            kafka_ssl_key_file=str(mine.key),
        )
    )

    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
