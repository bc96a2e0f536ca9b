"""Shared runtime pieces that need nothing running: settings, the event envelope, the Kafka
partition of a key, and how migration files are found."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lianluo.events.v1 import envelope_pb2, tenant_config_pb2
from lianluo.runtime.kafka import new_envelope, partition_for, unpack
from lianluo.runtime.postgres import RUNTIME_MIGRATIONS, MigrationError, load_migrations
from lianluo.runtime.settings import ServiceSettings
from lianluo.tenants.v1 import tenants_pb2

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)
GOOD_KEY = "k3y-for-unit-tests-0123456789"

# ---------------------------------------------------------------- settings


@pytest.fixture(autouse=True)
def no_lianluo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIANLUO_"):
            monkeypatch.delenv(name)


def make_settings(**overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "database_url": "postgresql://lianluo@localhost/lianluo",
        "kafka_bootstrap_servers": "localhost:9092",
        "admin_key": GOOD_KEY,
    }
    values.update(overrides)
    return ServiceSettings(**values)  # type: ignore[arg-type]


def _refused_fields(error: ValidationError) -> list[object]:
    return [e["loc"][0] for e in error.errors()]


def test_settings_with_the_required_values_start() -> None:
    s = make_settings()

    assert s.admin_key.get_secret_value() == GOOD_KEY
    assert (s.grpc_port, s.log_level, s.topic_prefix) == (50051, "INFO", "")


def test_the_admin_key_never_shows_in_the_settings_text() -> None:
    s = make_settings()

    assert GOOD_KEY not in repr(s)
    assert GOOD_KEY not in str(s)


@pytest.mark.parametrize(
    "admin_key",
    ["", "x" * 23, "changeme", "change-me", "secret", "admin", "password", "example"],
)
def test_a_short_or_placeholder_admin_key_is_refused(admin_key: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(admin_key=admin_key)

    assert _refused_fields(raised.value) == ["admin_key"]


def test_a_24_character_admin_key_is_enough() -> None:
    assert make_settings(admin_key="x" * 24).admin_key.get_secret_value() == "x" * 24


@pytest.mark.parametrize("missing", ["database_url", "kafka_bootstrap_servers", "admin_key"])
def test_a_missing_required_setting_stops_the_start(missing: str) -> None:
    values: dict[str, object] = {
        "database_url": "postgresql://localhost/lianluo",
        "kafka_bootstrap_servers": "localhost:9092",
        "admin_key": GOOD_KEY,
    }
    del values[missing]

    with pytest.raises(ValidationError) as raised:
        ServiceSettings(**values)  # type: ignore[arg-type]

    assert _refused_fields(raised.value) == [missing]


def test_settings_are_read_from_lianluo_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIANLUO_DATABASE_URL", "postgresql://db/lianluo")
    monkeypatch.setenv("LIANLUO_KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("LIANLUO_ADMIN_KEY", GOOD_KEY)
    monkeypatch.setenv("LIANLUO_TOPIC_PREFIX", "cell-2.")

    s = ServiceSettings()  # type: ignore[call-arg]

    assert (s.database_url, s.kafka_bootstrap_servers) == ("postgresql://db/lianluo", "broker:9092")
    assert s.topic("tenant.config") == "cell-2.tenant.config"


def test_topics_carry_the_cell_prefix() -> None:
    assert make_settings(topic_prefix="cell-1.").topic("tenant.config") == "cell-1.tenant.config"
    assert make_settings().topic("tenant.config") == "tenant.config"


@pytest.mark.parametrize("level", ["verbose", "TRACE", "CRITICAL", ""])
def test_an_unknown_log_level_is_refused(level: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(log_level=level)

    assert _refused_fields(raised.value) == ["log_level"]


def test_a_log_level_is_accepted_in_any_case() -> None:
    assert make_settings(log_level="debug").log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("grpc_port", 65536),
        ("grpc_port", -1),
        ("topic_partitions", 0),
        ("shutdown_grace_seconds", 0),
        ("db_pool_min", 0),
    ],
)
def test_numbers_out_of_range_are_refused(name: str, value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(**{name: value})

    assert _refused_fields(raised.value) == [name]


# ---------------------------------------------------------------- envelope


def _change() -> tenant_config_pb2.TenantConfigChanged:
    return tenant_config_pb2.TenantConfigChanged(
        kind="tenant",
        resource_id="0b6e8c1e-5d2a-4f3e-9b7c-2a1d3e4f5a6b",
        revision=3,
        tenant=tenants_pb2.Tenant(name="acme-bank", plan=tenants_pb2.PLAN_BUSINESS),
    )


def test_an_envelope_round_trips_its_payload_through_the_wire() -> None:
    before = datetime.now(UTC)
    envelope = new_envelope("tenant.config.changed", "tenant-a", _change(), "tenants")
    after = datetime.now(UTC)

    received = envelope_pb2.Envelope.FromString(envelope.SerializeToString())

    assert unpack(received, tenant_config_pb2.TenantConfigChanged) == _change()
    assert (received.type, received.tenant_id, received.producer) == (
        "tenant.config.changed",
        "tenant-a",
        "tenants",
    )
    assert uuid.UUID(received.event_id)
    assert before <= received.occur_time.ToDatetime(UTC) <= after


def test_each_envelope_gets_its_own_event_id() -> None:
    first = new_envelope("t", "tenant-a", _change(), "tenants")
    second = new_envelope("t", "tenant-a", _change(), "tenants")

    assert first.event_id != second.event_id


def test_unpacking_to_the_wrong_type_raises_naming_the_real_payload() -> None:
    envelope = new_envelope("tenant.config.changed", "tenant-a", _change(), "tenants")

    with pytest.raises(DecodeError, match="TenantConfigChanged"):
        unpack(envelope, tenants_pb2.Agent)


# ---------------------------------------------------------------- partitions

# Partitions of 1000 that the Java Kafka client gives these keys (the cross-client vectors
# used in aiokafka's own partitioner tests).
JAVA_PARTITIONS_OF_1000 = [
    (b"", 681),
    (b"a", 524),
    (b"ab", 434),
    (b"abc", 107),
    (b"123456789", 566),
    (b"\x00 ", 742),
]


@pytest.mark.parametrize(("key", "partition"), JAVA_PARTITIONS_OF_1000)
def test_the_partition_matches_the_java_client(key: bytes, partition: int) -> None:
    assert partition_for(key, 1000) == partition


@pytest.mark.parametrize(
    "key", [b"tenant-a", b"0b6e8c1e-5d2a-4f3e-9b7c-2a1d3e4f5a6b", b"\xff" * 7, b"k"]
)
@pytest.mark.parametrize("partitions", [1, 3, 8, 1024])
def test_the_partition_matches_aiokafkas_default_partitioner(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))

    assert partition_for(key, partitions) == DefaultPartitioner()(
        key, all_partitions, all_partitions
    )
    assert partition_for(key, partitions) == (murmur2(key) & 0x7FFFFFFF) % partitions


@PROPERTY
@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1024))
def test_a_key_always_gets_the_same_partition_in_range(key: bytes, partitions: int) -> None:
    partition = partition_for(key, partitions)

    assert 0 <= partition < partitions
    assert partition_for(bytes(key), partitions) == partition


# ---------------------------------------------------------------- migration files


def _write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text(f"-- {name}\nselect 1;\n")


def test_migrations_are_sorted_by_version(tmp_path: Path) -> None:
    _write(tmp_path, "0010_add_index.sql", "0001_init.sql", "0002_more_tables.sql")
    (tmp_path / "README.md").write_text("not a migration")

    found = load_migrations("tenants", tmp_path)

    assert [(m.component, m.version, m.name) for m in found] == [
        ("tenants", 1, "0001_init"),
        ("tenants", 2, "0002_more_tables"),
        ("tenants", 10, "0010_add_index"),
    ]
    assert found[0].sql == "-- 0001_init.sql\nselect 1;\n"


def test_an_empty_folder_has_no_migrations(tmp_path: Path) -> None:
    assert load_migrations("tenants", tmp_path) == []


@pytest.mark.parametrize(
    "bad_name",
    ["1_init.sql", "00001_init.sql", "0001-init.sql", "0001_Init.sql", "init.sql", "0001_.sql"],
)
def test_a_badly_named_migration_file_is_refused_by_name(tmp_path: Path, bad_name: str) -> None:
    _write(tmp_path, "0001_init.sql", bad_name)

    with pytest.raises(MigrationError, match=r"NNNN_snake_case\.sql") as raised:
        load_migrations("tenants", tmp_path)

    assert bad_name in str(raised.value)


def test_two_migrations_with_one_version_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_init.sql", "0002_a.sql", "0002_b.sql")

    with pytest.raises(MigrationError, match="share a version"):
        load_migrations("tenants", tmp_path)


def test_a_migrations_checksum_follows_its_text(tmp_path: Path) -> None:
    _write(tmp_path, "0001_init.sql")
    before = load_migrations("tenants", tmp_path)[0].checksum
    (tmp_path / "0001_init.sql").write_text("select 2;\n")

    assert load_migrations("tenants", tmp_path)[0].checksum != before
    assert (
        load_migrations("tenants", tmp_path)[0].checksum
        == load_migrations("tenants", tmp_path)[0].checksum
    )


def test_the_runtime_s_own_migrations_load() -> None:
    found = load_migrations("runtime", RUNTIME_MIGRATIONS)

    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found
