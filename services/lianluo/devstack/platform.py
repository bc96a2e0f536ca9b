"""`lianluo run` (what `make run` calls): the local platform with a demo, until Ctrl-C.

It starts Postgres and the broker (when not running), every service of one cell as its own
process, waits until each answers health, prints how to reach them, plays the demo, and then
serves until Ctrl-C, when it stops what it started.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time

from lianluo.devstack import infra
from lianluo.devstack.cell import Cell
from lianluo.devstack.demo import PHONE_NUMBER, play_demo
from lianluo.services import CELL_SERVICES

FIRST_PORT = 50051
DATABASE = "lianluo"
TOPIC_PREFIX = "cell-local."


def admin_key(config: infra.StackConfig) -> str:
    """The local admin key, made once and kept under the state folder."""
    path = config.state_dir / "admin-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def cell_env(config: infra.StackConfig, key: str) -> dict[str, str]:
    base = config.database_url.rsplit("/", 1)[0]
    return {
        "LIANLUO_DATABASE_URL": f"{base}/{DATABASE}",
        "LIANLUO_KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap,
        "LIANLUO_ADMIN_KEY": key,
        "LIANLUO_TOPIC_PREFIX": TOPIC_PREFIX,
    }


def main(
    demo: bool = True, replicas: dict[str, int] | None = None, first_port: int = FIRST_PORT
) -> int:
    # A process manager (or CI) stops with SIGTERM: clean up exactly as after Ctrl-C, so the
    # next run finds no Postgres or broker of ours still holding the state folder.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    config = infra.StackConfig.from_env()
    try:
        started_infra = infra.up(config)
        # The local broker keeps events in memory only, so the database they describe cannot
        # outlive it safely: every run starts its cell from a clean database.
        infra.create_database(config.database_url, DATABASE, fresh=True)
    except infra.InfraError as error:
        print(f"lianluo run: {error}", file=sys.stderr)
        return 1
    key = admin_key(config)
    cell = Cell(
        cell_env(config, key),
        config.state_dir / "logs",
        # The cell counts up from the port before the first one it uses.
        first_port=first_port - 1,
        replicas=dict(replicas or {}),
    )
    try:
        cell.start(CELL_SERVICES)
        print("\nLianluo is running (one local cell):")
        for r in cell.running:
            print(f"  {r.service:14} {r.address}   log: {r.log}")
        print(f"  {'postgres':14} {config.database_url.rsplit('/', 1)[0]}/{DATABASE}")
        print(f"  {'kafka':14} {config.kafka_bootstrap}   topics prefixed {TOPIC_PREFIX!r}")
        print(f"  admin key in {config.state_dir / 'admin-key'}")
        addresses = {r.service: r.address for r in cell.running if r.index == 0}
        (config.state_dir / "cell.json").write_text(json.dumps(addresses, indent=2))
        if demo:
            result = asyncio.run(play_demo(cell, key))
            demo_file = config.state_dir / "demo.json"
            demo_file.write_text(
                json.dumps(
                    {
                        "tenant_id": result.tenant_id,
                        "tenant": result.tenant_name,
                        "key": result.tenant_key,
                        "password": result.password,
                    }
                )
            )
            demo_file.chmod(0o600)
            print(f"\nChat as a customer in a browser: {result.web_url}")
            console = cell.replica("console").http_url
            print(f"\nThe console: {console}/  (organisation {result.tenant_name!r})")
            print(f"  agent       li.wei    password {result.password}")
            print(f"  supervisor  mei.lin   password {result.password}")
            print(f"  admin       admin     password {result.password}")
            sip = cell.replica("voice").http_port
            print(f"\nCall the demo from a softphone: sip:{PHONE_NUMBER}@127.0.0.1:{sip}")
            print("\nHold a conversation by hand, in two more terminals:")
            print("  .venv/bin/lianluo agent li.wei      # signs in as Li, accepts offers")
            print("  .venv/bin/lianluo customer          # starts a web chat with the flow")
        print("\nServing until Ctrl-C.")
        _wait_for_interrupt(cell)
        return 0
    except KeyboardInterrupt:
        print("\nStopping.", file=sys.stderr)
        return 130
    except (TimeoutError, RuntimeError, infra.InfraError) as error:
        print(f"lianluo run: {error}", file=sys.stderr)
        return 1
    finally:
        cell.stop()
        if started_infra:
            infra.down(config, only=started_infra)


def _wait_for_interrupt(cell: Cell) -> None:
    while not cell.failed():
        time.sleep(0.5)
    names = ", ".join(f"{r.service} (log {r.log})" for r in cell.failed())
    print(f"lianluo run: {names} stopped", file=sys.stderr)
