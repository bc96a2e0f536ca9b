"""Guards on the codebase itself: generated code matches its protos, the import contracts
(the runtime imports no service, services never import each other) hold, and every Kafka client
is made with the security settings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_the_protos() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lianluo.devstack.protos", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_hold() -> None:
    done = subprocess.run(
        [str(BIN / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# The wrappers that make Kafka clients, and the aiokafka clients themselves.
_KAFKA_WRAPPERS = {
    "EventProducer",
    "EventConsumer",
    "ensure_topics",
    "TenantConfigView",
    "TimelineFollower",
    "read_all",
}
_KAFKA_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_every_kafka_client_of_the_runtime_and_services_gets_the_security_settings() -> None:
    """A client made without LIANLUO_KAFKA_SECURITY_PROTOCOL and its credentials would reach the
    local broker and fail against a managed Kafka; the dev stack alone talks to the local one."""
    missing = []
    package = ROOT / "services" / "lianluo"
    for path in sorted(package.rglob("*.py")):
        if "devstack" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            where = f"{path.relative_to(ROOT)}:{node.lineno} {name}"
            if name in _KAFKA_WRAPPERS and "security" not in {k.arg for k in node.keywords}:
                missing.append(where)
            spread = [k.value for k in node.keywords if k.arg is None]
            secured = any(
                isinstance(v, ast.Call) and _called_name(v) == "client_security" for v in spread
            )
            if name in _KAFKA_CLIENTS and not secured:
                missing.append(where)
    assert not missing, "Kafka clients made without the security settings: " + ", ".join(missing)


def test_every_service_dials_the_others_through_the_platforms_tls_settings() -> None:
    """A channel made with grpc's own functions would stay plaintext when the cell turns on
    TLS (LIANLUO_GRPC_TLS_*): services dial each other only through platform_channel."""
    found = []
    package = ROOT / "services" / "lianluo" / "services"
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and _called_name(node) in (
                "insecure_channel",
                "secure_channel",
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "channels made outside platform_channel: " + ", ".join(found)
