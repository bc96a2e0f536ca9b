"""API keys and who may call what; domain errors as the gRPC status a client receives (no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from lianluo.runtime.auth import (
    IssuedKey,
    Principal,
    issue_key,
    matches,
    parse_token,
    require_admin,
    require_tenant,
    reset_principal,
    set_principal,
    sha256_hex,
)
from lianluo.runtime.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Violations,
    to_rpc_status,
)

ADMIN = Principal("admin-key", None)
TENANT_A = Principal("key-a", "tenant-a")

# ---------------------------------------------------------------- keys


def test_an_issued_key_round_trips_and_matches_only_its_own_secret() -> None:
    issued = issue_key()

    key_id, secret = parse_token(issued.token)

    assert issued.token.startswith("llk_")
    assert (key_id, secret) == (issued.key_id, issued.secret)
    assert matches(secret, issued.secret_sha256)
    assert not matches(secret + "x", issued.secret_sha256)
    assert not matches(issue_key().secret, issued.secret_sha256)


def test_two_issued_keys_differ() -> None:
    first, second = issue_key(), issue_key()

    assert first.key_id != second.key_id
    assert first.secret != second.secret


def test_a_secret_containing_underscores_survives_the_round_trip() -> None:
    issued = IssuedKey("a1b2", "se_cr-et_", sha256_hex("se_cr-et_"))

    assert parse_token(issued.token) == ("a1b2", "se_cr-et_")
    assert matches("se_cr-et_", issued.secret_sha256)


def test_only_the_hash_of_the_secret_is_kept() -> None:
    issued = issue_key()

    assert issued.secret not in issued.secret_sha256
    assert issued.secret_sha256 == sha256_hex(issued.secret)
    assert len(issued.secret_sha256) == 64


@pytest.mark.parametrize(
    "token",
    ["", "llk", "llk_", "llk_abc", "llk__secret", "llk_abc_", "key_abc_secret", "LLK_abc_secret"],
)
def test_a_malformed_key_is_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed API key"):
        parse_token(token)


# ---------------------------------------------------------------- principals


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    token = set_principal(principal)
    try:
        yield
    finally:
        reset_principal(token)


def test_without_a_principal_every_check_is_unauthenticated() -> None:
    with acting_as(None):
        with pytest.raises(Unauthenticated, match="missing API key"):
            require_admin()
        with pytest.raises(Unauthenticated):
            require_tenant("tenant-a")


@pytest.mark.parametrize("tenant_id", ["tenant-a", "tenant-b"])
def test_an_admin_may_act_on_any_tenant(tenant_id: str) -> None:
    with acting_as(ADMIN):
        assert require_admin() == ADMIN
        assert require_tenant(tenant_id) == ADMIN


def test_a_tenant_key_may_act_only_on_its_own_tenant() -> None:
    with acting_as(TENANT_A):
        assert require_tenant("tenant-a") == TENANT_A
        with pytest.raises(PermissionDenied):
            require_tenant("tenant-b")
        with pytest.raises(PermissionDenied):
            require_admin()


def test_resetting_restores_the_previous_principal() -> None:
    with acting_as(ADMIN):
        with acting_as(TENANT_A), pytest.raises(PermissionDenied):
            require_admin()
        assert require_admin() == ADMIN
    with acting_as(None), pytest.raises(Unauthenticated):
        require_admin()


# ---------------------------------------------------------------- errors as gRPC status


def _unpack(status: status_pb2.Status, detail_type: type) -> object:
    assert len(status.details) == 1
    detail = detail_type()
    assert status.details[0].Unpack(detail), status.details[0].type_url
    return detail


def test_invalid_argument_lists_every_field_violation() -> None:
    error = InvalidArgument(
        [FieldViolation("tenant.name", "must be 3-40 of a-z 0-9 -"), FieldViolation("x", "y")]
    )

    status = to_rpc_status(error)

    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "tenant.name: must be 3-40 of a-z 0-9 -; x: y"
    bad = _unpack(status, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("tenant.name", "must be 3-40 of a-z 0-9 -"),
        ("x", "y"),
    ]


@pytest.mark.parametrize(
    ("error", "code", "message", "resource"),
    [
        (
            NotFound("queue", "cards"),
            code_pb2.NOT_FOUND,
            "queue 'cards' not found",
            ("queue", "cards"),
        ),
        (
            AlreadyExists("tenant", "acme"),
            code_pb2.ALREADY_EXISTS,
            "tenant 'acme' already exists",
            ("tenant", "acme"),
        ),
        (
            Aborted("flow", "main", "revision 3 is stale"),
            code_pb2.ABORTED,
            "revision 3 is stale",
            ("flow", "main"),
        ),
    ],
    ids=["not found", "already exists", "aborted"],
)
def test_resource_errors_name_the_resource(
    error: DomainError, code: int, message: str, resource: tuple[str, str]
) -> None:
    status = to_rpc_status(error)

    assert (status.code, status.message) == (code, message)
    info = _unpack(status, error_details_pb2.ResourceInfo)
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == resource


def test_a_failed_precondition_carries_its_subject() -> None:
    status = to_rpc_status(FailedPrecondition("tenant", "is suspended"))

    assert (status.code, status.message) == (code_pb2.FAILED_PRECONDITION, "tenant: is suspended")
    failure = _unpack(status, error_details_pb2.PreconditionFailure)
    assert isinstance(failure, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        ("STATE", "tenant", "is suspended")
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unauthenticated("missing API key"), code_pb2.UNAUTHENTICATED),
        (PermissionDenied("not yours"), code_pb2.PERMISSION_DENIED),
        (DomainError("surprise"), code_pb2.UNKNOWN),
    ],
    ids=["unauthenticated", "permission denied", "unknown"],
)
def test_other_errors_have_their_code_and_no_details(error: DomainError, code: int) -> None:
    status = to_rpc_status(error)

    assert (status.code, status.message, list(status.details)) == (code, error.message, [])


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument([FieldViolation("f", "d")]),
        NotFound("q", "n"),
        AlreadyExists("q", "n"),
        Aborted("q", "n", "m"),
        FailedPrecondition("s", "d"),
        Unauthenticated("m"),
        PermissionDenied("m"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_rpc_code_agrees_with_the_grpc_status_code(error: DomainError) -> None:
    assert isinstance(error.code, grpc.StatusCode)
    assert to_rpc_status(error).code == error.code.value[0]


def test_violations_collect_every_problem_before_raising() -> None:
    v = Violations()
    assert v.check(True, "a", "fine") is True
    v.raise_if_any()
    assert v.check(False, "b", "bad") is False
    v.add("c", "worse")

    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_any()

    assert raised.value.violations == [FieldViolation("b", "bad"), FieldViolation("c", "worse")]
