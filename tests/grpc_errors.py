"""A refused gRPC call, as the tests read it: its status, and the fields it names."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


async def fails(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """The error `call` ends with, which must have `code`."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def field_errors(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """Each field an INVALID_ARGUMENT names (google.rpc.BadRequest), with why."""
    status = rpc_status.from_call(error)
    assert status is not None, "INVALID_ARGUMENT must carry google.rpc details"
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found |= {v.field: v.description for v in bad.field_violations}
    return found


def bad_fields(error: grpc.aio.AioRpcError) -> set[str]:
    """The fields an INVALID_ARGUMENT names."""
    return set(field_errors(error))
