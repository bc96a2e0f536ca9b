"""The grpc.aio server every service runs: health, reflection, tracing, auth and error mapping."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from lianluo.runtime import auth, metrics, quotas, tokens, validation
from lianluo.runtime.errors import DomainError, PermissionDenied, Unauthenticated, to_rpc_status
from lianluo.runtime.faults import is_outage
from lianluo.runtime.logs import get_logger
from lianluo.runtime.settings import GrpcTlsSettings
from lianluo.runtime.telemetry import extract_metadata

log = get_logger(__name__)

# Infrastructure methods answer without a key and are not wrapped: load balancers and
# grpcurl must reach them, and their handlers are not plain coroutines or generators.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

CallScope = Callable[[str, grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


# The four RPC shapes: the handler's attribute, its constructor, and whether requests and
# responses stream.
_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True, True),
)
Wrap = Callable[[Callable[..., Any], bool, bool], Callable[..., Any]]


def _rebuilt(handler: grpc.RpcMethodHandler, wrap: Wrap, request_deserializer: Any) -> Any:
    """The same method with its behavior wrapped: `wrap(behavior, requests_stream,
    responses_stream)`, whatever its shape."""
    for attribute, make, requests_stream, responses_stream in _SHAPES:
        behavior = getattr(handler, attribute)
        if behavior:
            return make(
                wrap(behavior, requests_stream, responses_stream),
                request_deserializer=request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError("a method handler without a behavior")


def _wrap_handler(handler: grpc.RpcMethodHandler, method: str, scope: CallScope) -> Any:
    """Run every call of `handler` inside `scope`, for all four RPC shapes."""

    def unary_response(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with scope(method, context):
                return await behavior(request, context)

        return call

    def stream_response(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with scope(method, context):
                async for response in behavior(request, context):
                    yield response

        return call

    def wrap(behavior: Callable[..., Any], _: bool, responses_stream: bool) -> Callable[..., Any]:
        return stream_response(behavior) if responses_stream else unary_response(behavior)

    return _rebuilt(handler, wrap, handler.request_deserializer)


class _OwnMethodsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rebuilds the handler of every method of the service's own (not health or reflection)."""

    @abstractmethod
    def rebuild(self, handler: grpc.RpcMethodHandler, method: str) -> Any: ...

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        return self.rebuild(handler, method)


class _ScopedInterceptor(_OwnMethodsInterceptor):
    """Wraps every call of the service's own methods in `scope`."""

    @abstractmethod
    def scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]: ...

    def rebuild(self, handler: grpc.RpcMethodHandler, method: str) -> Any:
        return _wrap_handler(handler, method, self.scope)


class MetricsInterceptor(_ScopedInterceptor):
    """Counts and times every call by method and the status code it ended with."""

    def scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        return metrics.observe_call(method, context)


class TracingInterceptor(_ScopedInterceptor):
    """A server span per call, child of the trace context in the call metadata."""

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("lianluo.grpc")

    @asynccontextmanager
    async def scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        parent = extract_metadata(context.invocation_metadata())
        token = otel_context.attach(parent)
        service, _, name = method.lstrip("/").partition("/")
        try:
            with self._tracer.start_as_current_span(
                method.lstrip("/"),
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            ):
                yield
        finally:
            otel_context.detach(token)


class ErrorInterceptor(_ScopedInterceptor):
    """Domain errors become status codes with google.rpc details; anything else is INTERNAL."""

    @asynccontextmanager
    async def scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except DomainError as error:
            trace.get_current_span().set_status(Status(StatusCode.ERROR, error.message))
            await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
        except Exception as error:
            if is_outage(error):
                # Postgres restarting or failing over: the client's retry will find it back.
                log.warning("a dependency is unavailable", method=method, error=repr(error))
                trace.get_current_span().set_status(Status(StatusCode.ERROR, "unavailable"))
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry"
                )
            log.exception("unhandled error", method=method)
            trace.get_current_span().set_status(Status(StatusCode.ERROR))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


class ValidationInterceptor(_OwnMethodsInterceptor):
    """Decodes and checks every request message before the handler sees it.

    The innermost interceptor: it takes over the decoding, so a body that does not parse is an
    INVALID_ARGUMENT raised inside the call (where the error interceptor maps it) instead of a
    failure inside grpc that reaches the client as UNKNOWN with a parser's internals.
    """

    def rebuild(self, handler: grpc.RpcMethodHandler, method: str) -> Any:
        return _validating_handler(handler, method)


def _validating_handler(handler: grpc.RpcMethodHandler, method: str) -> Any:
    deserialize = handler.request_deserializer
    type_name = method.rsplit("/", 1)[-1] + " request"

    def decode(body: bytes) -> Any:
        message = validation.parse_request(deserialize, body, type_name)
        validation.check_request(message)
        return message

    async def decoded(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for body in requests:
            yield decode(body)

    def wrap(behavior: Callable[..., Any], requests_stream: bool, _: bool) -> Callable[..., Any]:
        if requests_stream:
            return lambda bodies, context: behavior(decoded(bodies), context)
        return lambda body, context: behavior(decode(body), context)

    # No deserializer: the raw body reaches `decode`, where a failure is the client's error.
    return _rebuilt(handler, wrap, None)


@dataclass(eq=False)
class _OpenCall:
    """A call being served for a tenant's credential, checked again when the tenant changes."""

    task: asyncio.Task[Any]
    metadata: Sequence[tuple[str, str | bytes]]
    permission: str
    ended: DomainError | None = None


class AuthInterceptor(_ScopedInterceptor):
    """Turns `authorization: Bearer <key or token>` into the principal of the call, checks the
    permission the RPC declared, and spends the tenant's per-second quotas.

    A credential is checked when the call starts and again whenever its tenant's people, keys
    or state change (`recheck`): a stream opened by a person whose sessions were then ended, or
    by a key since revoked, ends with the refusal instead of serving on for hours.
    """

    def __init__(
        self,
        admin_key: str,
        credentials: tokens.Credentials | None,
        rules: dict[str, auth.Rule],
    ) -> None:
        self._admin_sha256 = auth.sha256_hex(admin_key)
        self._credentials = credentials
        self._rules = rules
        self.limiter = quotas.RateLimiter()
        self._open: dict[str, set[_OpenCall]] = {}  # tenant id -> its calls being served
        self._rechecks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        rule = self._rules.get(method, auth.Rule(auth.PLATFORM))
        principal = None
        metadata = context.invocation_metadata() or ()
        if rule.permission != auth.PUBLIC:
            principal = await self._authenticate(metadata)
            if not principal.may(rule.permission):
                raise PermissionDenied(
                    f"this call needs the {rule.permission} permission, which the caller lacks"
                )
            tenant, limits = principal.tenant_id, principal.limits
            if tenant is not None:
                self.limiter.take(tenant, "api_calls_per_second", limits.api_calls_per_second)
                if rule.emits:
                    self.limiter.take(tenant, "events_per_second", limits.events_per_second)
        token = auth.set_principal(principal)
        call = auth.set_call(auth.Call(method, context.peer() or "", self.limiter))
        task = asyncio.current_task()
        tenant_id = principal.tenant_id if principal is not None else None
        served = None
        if tenant_id is not None and task is not None:
            served = _OpenCall(task, metadata, rule.permission)
            self._open.setdefault(tenant_id, set()).add(served)
        try:
            yield
        except asyncio.CancelledError:
            if served is None or served.ended is None:
                raise
            served.task.uncancel()
            raise served.ended from None
        finally:
            if served is not None and tenant_id is not None:
                calls = self._open.get(tenant_id, set())
                calls.discard(served)
                if not calls:
                    self._open.pop(tenant_id, None)
            auth.reset_call(call)
            auth.reset_principal(token)

    def recheck(self, tenant_id: str) -> None:
        """Check the credential of every call being served for `tenant_id` again, and end
        those it no longer allows."""
        calls = list(self._open.get(tenant_id, ()))
        if calls:
            task = asyncio.get_running_loop().create_task(self._recheck(calls))
            self._rechecks.add(task)
            task.add_done_callback(self._rechecks.discard)

    async def _recheck(self, calls: list[_OpenCall]) -> None:
        for served in calls:
            if served.task.done():
                continue
            try:
                principal = await self._authenticate(served.metadata)
                if not principal.may(served.permission):
                    raise PermissionDenied(f"the caller no longer has {served.permission}")
            except DomainError as refused:
                log.info("a call ends: its credential is no longer valid", refusal=refused.message)
                served.ended = refused
                served.task.cancel()

    async def _authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> auth.Principal:
        values = [v for k, v in metadata if k == "authorization" and isinstance(v, str)]
        if not values:
            raise Unauthenticated("missing credential: send `authorization: Bearer <key or token>`")
        scheme, _, bearer = values[0].partition(" ")
        if scheme.lower() != "bearer" or not bearer:
            raise Unauthenticated("the authorization header must be `Bearer <key or token>`")
        if auth.matches(bearer, self._admin_sha256):
            return auth.Principal(key_id=auth.ADMIN_BOOTSTRAP_KEY_ID, tenant_id=None)
        if tokens.is_token(bearer):
            principal = None
            if self._credentials is not None:
                principal = await tokens.authenticate(bearer, self._credentials)
            if principal is None:
                raise Unauthenticated("unknown, retired or revoked token, or an ended session")
            return principal
        key_id, secret = auth.parse_token(bearer)
        principal = None
        if self._credentials is not None:
            principal = await self._credentials.resolve(key_id, auth.sha256_hex(secret))
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        return principal


def declared_rules(servicer: Any, full_name: str) -> dict[str, auth.Rule]:
    """What each RPC of the proto service `full_name` declares in `servicer`."""
    service = descriptor_pool.Default().FindServiceByName(full_name)
    found: dict[str, auth.Rule] = {}
    for method in service.methods:
        rule = auth.rule_of(getattr(servicer, method.name, None))
        if rule is None:
            raise RuntimeError(f"{full_name}/{method.name} declares no permission (auth.needs)")
        found[f"/{full_name}/{method.name}"] = rule
    return found


# The generated add_<Service>Servicer_to_server functions.
RegisterFn = Callable[..., None]


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def server_credentials(tls: GrpcTlsSettings) -> grpc.ServerCredentials | None:
    """TLS for the service's port, with the client's certificate required when mutual; None:
    plaintext (the settings have no certificate)."""
    if not tls.grpc_tls_cert_file:
        return None
    return grpc.ssl_server_credentials(
        [(Path(tls.grpc_tls_key_file).read_bytes(), Path(tls.grpc_tls_cert_file).read_bytes())],
        root_certificates=_read(tls.grpc_tls_ca_file) if tls.grpc_tls_client_auth else None,
        require_client_auth=tls.grpc_tls_client_auth,
    )


def platform_channel(address: str, tls: GrpcTlsSettings) -> grpc.aio.Channel:
    """A channel to another service of the platform: TLS checked against the platform's CA
    when the settings name one (presenting the service's own certificate for mutual TLS),
    else plaintext."""
    if not tls.grpc_tls_ca_file:
        return grpc.aio.insecure_channel(address)
    mutual = tls.grpc_tls_client_auth
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.grpc_tls_ca_file),
        private_key=_read(tls.grpc_tls_key_file) if mutual else None,
        certificate_chain=_read(tls.grpc_tls_cert_file) if mutual else None,
    )
    options = []
    if tls.grpc_tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls.grpc_tls_server_name))
    return grpc.aio.secure_channel(address, credentials, options=options)


class GrpcServer:
    """Owns the server, its health service and its lifecycle."""

    def __init__(
        self,
        host: str,
        port: int,
        admin_key: str,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self._address = f"{host}:{port}"
        self._tls = credentials
        self._admin_key = admin_key
        self._services: list[tuple[RegisterFn, Any, str]] = []
        # "/package.Service/Method" -> what its handler declared.
        self._rules: dict[str, auth.Rule] = {}
        self.credentials: tokens.Credentials | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._auth: AuthInterceptor | None = None
        # SERVING on the health service: from the end of start() to the start of stop().
        self.serving = False

    def add(self, register: RegisterFn, servicer: Any, full_name: str) -> None:
        """Register a servicer; `full_name` is its proto name, for health and reflection.

        Every RPC of the service must declare its permission (`auth.needs`): one that does not
        stops the start, so no call is ever served without a rule.
        """
        self._rules.update(declared_rules(servicer, full_name))
        self._services.append((register, servicer, full_name))

    @property
    def service_names(self) -> list[str]:
        return [name for _, _, name in self._services]

    async def start(self) -> int:
        self._auth = AuthInterceptor(self._admin_key, self.credentials, self._rules)
        server = grpc.aio.server(
            interceptors=[
                # Outermost: it sees the code every other interceptor ends a call with.
                MetricsInterceptor(),
                TracingInterceptor(),
                ErrorInterceptor(),
                self._auth,
                ValidationInterceptor(),
            ],
            options=[("grpc.so_reuseport", 0)],
        )
        for register, servicer, _ in self._services:
            register(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        if self._tls is not None:
            self.port = server.add_secure_port(self._address, self._tls)
        else:
            self.port = server.add_insecure_port(self._address)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self._address}")
        await server.start()
        self._server = server
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        return self.port

    def recheck(self, tenant_id: str) -> None:
        """A tenant's people, keys or state changed: end its calls whose credential no longer
        holds."""
        if self._auth is not None:
            self._auth.recheck(tenant_id)

    async def stop(self, grace: float) -> None:
        # NOT_SERVING first, so load balancers stop sending before in-flight calls drain.
        self.serving = False
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
