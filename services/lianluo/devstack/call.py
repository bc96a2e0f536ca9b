"""`lianluo call`: call any RPC of a running service with JSON, found through its reflection.

What grpcurl does for the API examples, with nothing more installed than `make install` brings:
`lianluo call ADDRESS list` names the services, `lianluo call ADDRESS Service/Method '{json}'`
sends one request and prints the reply (or each message of a server stream) as JSON.
"""

from __future__ import annotations

import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status


class CallError(Exception):
    """A problem the user can fix: an unknown method, bad JSON, a service that does not answer."""


def call(address: str, target: str, body: str, key: str, timeout: float) -> list[str]:
    """The reply (one JSON document per message), or the service list for `list`."""
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise CallError(f"nothing answers at {address}") from None
        database = ProtoReflectionDescriptorDatabase(channel)
        if target == "list":
            return sorted(database.get_services())
        service_name, _, method_name = target.rpartition("/")
        pool = descriptor_pool.DescriptorPool(database)
        try:
            method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        except KeyError:
            raise CallError(f"{address} has no method {target!r}; try `list`") from None
        if method.client_streaming:
            raise CallError(f"{target} takes a client stream; use a client library for it")
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        try:
            request = json_format.Parse(body or "{}", request_class())
        except json_format.ParseError as error:
            raise CallError(
                f"the request is not a {method.input_type.full_name}: {error}"
            ) from None
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        path = f"/{service_name}/{method_name}"
        kwargs = {
            "request_serializer": request_class.SerializeToString,
            "response_deserializer": reply_class.FromString,
        }
        try:
            if method.server_streaming:
                stream = channel.unary_stream(path, **kwargs)
                replies = list(stream(request, metadata=metadata, timeout=timeout))
            else:
                replies = [
                    channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=timeout)
                ]
        except grpc.RpcError as error:
            raise CallError(_status_text(error)) from None
        return [json_format.MessageToJson(r, indent=2, ensure_ascii=False) for r in replies]


def _status_text(error: grpc.RpcError) -> str:
    code = error.code().name
    text = f"{code}: {error.details()}"
    status = rpc_status.from_call(error)
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                text += "".join(f"\n  {v.field}: {v.description}" for v in bad.field_violations)
    return text


def main(address: str, target: str, body: str, key: str, timeout: float) -> int:
    try:
        for line in call(address, target, body, key, timeout):
            print(line)
    except CallError as error:
        print(f"lianluo call: {error}", file=sys.stderr)
        return 1
    return 0


def request_text(value: str) -> str:
    """The request as given, or read from standard input for `-`."""
    return sys.stdin.read() if value == "-" else value
