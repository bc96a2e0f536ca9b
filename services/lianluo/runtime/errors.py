"""Domain errors, and how each becomes a gRPC status with google.rpc details.

Domain code raises these and knows nothing of gRPC; the server's error interceptor converts them,
so a client always gets a status code and, for bad input, the name of every offending field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


# An error reply stays small whatever the input: clients keep gRPC's default metadata limits
# (8 KiB headers), and the details travel in the trailers.
MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 120
MAX_DESCRIPTION_CHARS = 240


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        shown = [
            FieldViolation(
                _cut(v.field, MAX_FIELD_CHARS), _cut(v.description, MAX_DESCRIPTION_CHARS)
            )
            for v in violations[:MAX_VIOLATIONS]
        ]
        more = len(violations) - len(shown)
        message = "; ".join(f"{v.field}: {v.description}" for v in shown)
        super().__init__(message + (f"; and {more} more" if more > 0 else ""))
        self.violations = shown

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [_pack(bad)]


@dataclass
class Violations:
    """Collects every problem of one request, so the client sees them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> bool:
        if not ok:
            self.add(field_path, description)
        return ok

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


class _ResourceError(DomainError):
    def __init__(self, resource_type: str, resource_name: str, message: str) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type, resource_name=self.resource_name
        )
        return [_pack(info)]


class NotFound(_ResourceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(
            resource_type, resource_name, f"{resource_type} {resource_name!r} not found"
        )


class AlreadyExists(_ResourceError):
    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(
            resource_type, resource_name, f"{resource_type} {resource_name!r} already exists"
        )


class Aborted(_ResourceError):
    """An optimistic-concurrency conflict: the caller read an older revision."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, subject: str, description: str) -> None:
        super().__init__(f"{subject}: {description}")
        self.subject = subject
        self.description = description

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="STATE", subject=self.subject, description=self.description
                )
            ]
        )
        return [_pack(failure)]


class ResourceExhausted(DomainError):
    """Over a quota: which one (QuotaFailure), and when to try again (RetryInfo)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, subject: str, quota: str, description: str, retry_after: float) -> None:
        super().__init__(f"{description}; retry in {max(retry_after, 0.001):.3f} s")
        self.subject = subject
        self.quota = quota
        self.description = description
        self.retry_after = max(retry_after, 0.001)

    def details(self) -> list[any_pb2.Any]:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(self.retry_after * 1e9))
        failure = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=self.subject, description=self.description, quota_id=self.quota
                )
            ]
        )
        return [_pack(retry), _pack(failure)]


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(DomainError):
    """Something this service depends on outside the platform (an SMS provider) cannot be
    reached or refused for now; the caller may try again."""

    code = grpc.StatusCode.UNAVAILABLE


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    return status_pb2.Status(
        code=getattr(code_pb2, error.code.name),
        message=error.message,
        details=error.details(),
    )


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
