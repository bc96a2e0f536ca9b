"""Timed gRPC calls and Connect streams for Locust users (synchronous stubs under gevent).

Every unary call and every stream join is reported through `environment.events.request`, so
Locust's statistics, CSV and HTML reports hold all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.queue
import grpc

from lianluo.media.v1 import media_pb2 as mpb

FramePredicate = Callable[[mpb.ServerFrame], bool]
# Long enough for a loaded 2-core cell, short enough that a stuck call shows as a failure.
CALL_TIMEOUT = 10.0


def report(
    environment: Any, kind: str, name: str, millis: float, size: int = 0, error: Any = None
) -> None:
    environment.events.request.fire(
        request_type=kind,
        name=name,
        response_time=millis,
        response_length=size,
        exception=error,
        context={},
    )


class Expected(Exception):
    """A status the caller anticipates (for example an offer withdrawn by an abandon)."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


class Caller:
    """Unary calls with the load tenant's credentials and the synthetic-traffic baggage."""

    def __init__(self, environment: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.environment = environment
        self.metadata = metadata

    def __call__(
        self,
        name: str,
        method: Any,
        request: Any,
        expected: tuple[grpc.StatusCode, ...] = (),
    ) -> Any:
        start = time.perf_counter()
        try:
            reply = method(request, metadata=self.metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            millis = (time.perf_counter() - start) * 1000
            code = error.code()
            if code in expected:
                # Counted apart and not as a failure: the system answered as it should.
                report(self.environment, "grpc", f"{name} [{code.name}]", millis)
                raise Expected(code) from error
            report(self.environment, "grpc", name, millis, error=error)
            raise
        millis = (time.perf_counter() - start) * 1000
        report(self.environment, "grpc", name, millis, reply.ByteSize())
        return reply


class StreamEnded(Exception):
    """The Connect stream closed before the awaited frame arrived."""


class ConnectStream:
    """One media Connect stream: a greenlet reads frames; callers wait for the ones they need."""

    def __init__(
        self,
        caller: Caller,
        stub: Any,
        join: mpb.Join,
        on_frame: Callable[[mpb.ServerFrame], None] | None = None,
    ) -> None:
        self.frames: list[mpb.ServerFrame] = []
        self.error: grpc.RpcError | None = None
        self.closed = False
        self._on_frame = on_frame
        self._outgoing: gevent.queue.Queue[mpb.ClientFrame | None] = gevent.queue.Queue()
        self._outgoing.put(mpb.ClientFrame(join=join))
        self._changed = gevent.event.Event()
        self._call = stub.Connect(self._requests(), metadata=caller.metadata)
        self._reader = gevent.spawn(self._read)

    @classmethod
    def open(
        cls,
        caller: Caller,
        stub: Any,
        join: mpb.Join,
        name: str,
        on_frame: Callable[[mpb.ServerFrame], None] | None = None,
        retry: tuple[grpc.StatusCode, ...] = (),
        expected: tuple[grpc.StatusCode, ...] = (),
    ) -> ConnectStream:
        """A joined stream; the time to `joined` is reported under `name`. Codes in `retry`
        are retried for a while: a change made through Kafka reaches media a moment later.
        Codes in `expected` are counted apart and raise Expected, as in Caller."""
        start = time.perf_counter()
        while True:
            stream = cls(caller, stub, join, on_frame)
            try:
                stream.wait_for(lambda f: f.WhichOneof("frame") == "joined", CALL_TIMEOUT)
                break
            except (StreamEnded, gevent.Timeout) as error:
                stream.close()
                code = stream.error.code() if stream.error is not None else None
                if code in retry and _ms(start) < CALL_TIMEOUT * 1000:
                    gevent.sleep(0.02)
                    continue
                if code is not None and code in expected:
                    report(caller.environment, "stream", f"{name} [{code.name}]", _ms(start))
                    raise Expected(code) from error
                report(caller.environment, "stream", name, _ms(start), error=stream.error or error)
                raise
        report(caller.environment, "stream", name, _ms(start))
        return stream

    def _requests(self) -> Any:
        while (frame := self._outgoing.get()) is not None:
            yield frame

    def _read(self) -> None:
        try:
            for frame in self._call:
                self.frames.append(frame)
                if self._on_frame is not None:
                    self._on_frame(frame)
                self._wake()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
        finally:
            self.closed = True
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()

    def send(self, content: mpb.MessageContent, client_id: str) -> None:
        self._outgoing.put(
            mpb.ClientFrame(send=mpb.SendMessage(client_message_id=client_id, content=content))
        )

    def wait_for(self, predicate: FramePredicate, seconds: float) -> mpb.ServerFrame:
        """The first frame, arrived or arriving, for which `predicate` holds."""
        seen = 0
        with gevent.Timeout(seconds):
            while True:
                changed = self._changed
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self.closed:
                    raise StreamEnded(str(self.error) if self.error else "stream closed")
                changed.wait()

    def close(self) -> None:
        self._outgoing.put(None)
        self._call.cancel()
        self._reader.join(timeout=2)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
