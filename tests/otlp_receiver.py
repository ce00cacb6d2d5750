"""A tiny OTLP/gRPC trace receiver: a test double for the OTLP endpoint of Jaeger,
Tempo or an OpenTelemetry Collector.

It serves `TraceService.Export` over plaintext gRPC on a free loopback port and keeps
every span it is sent, flattened and tagged with its resource's `service.name`. That is
all it does: no TLS, no OTLP/HTTP, no metrics or logs, no validation beyond what
protobuf decoding does, no partial-success replies, no storage, sampling or queries.
A test passing against it shows that spillway's processes export well-formed OTLP with
consistent trace and parent ids; it does not show that a given backend accepts, stores
or displays those traces.

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, ...}
        ...
        receiver.wait_until(lambda spans: len(spans) >= 8, timeout_s=10)
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

AttributeValue = str | bool | int | float | bytes | tuple[Any, ...] | dict[str, Any] | None


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, with ids as lowercase hex (`parent_id` is "" for a root)."""

    service: str
    scope: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    def attr(self, key: str) -> AttributeValue:
        return self.attributes.get(key)


def group_by_trace(spans: Iterable[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """Spans keyed by trace id, each list in arrival order."""
    traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return dict(traces)


def any_value(value: AnyValue) -> AttributeValue:
    """The Python value an OTLP `AnyValue` holds (arrays as tuples, kvlists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    scalar: AttributeValue = getattr(value, kind)
    return scalar


def attributes(pairs: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    return {kv.key: any_value(kv.value) for kv in pairs}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receive: Callable[[list[ReceivedSpan]], None]) -> None:
        self._receive = receive

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            scope=scope_spans.scope.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status_code=span.status.code,
                            attributes=attributes(span.attributes),
                        )
                    )
        self._receive(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC trace endpoint on 127.0.0.1 that remembers what it was sent."""

    def __init__(self, workers: int = 4) -> None:
        self._spans: list[ReceivedSpan] = []
        self._requests = 0
        self._changed = threading.Condition()
        # A free port of our own: never share one with a leftover server.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-receiver"),
            options=[("grpc.so_reuseport", 0)],
        )
        # The generated registration function carries no annotations.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self._add), self._server
        )
        self.port: int = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        """The value for `OTEL_EXPORTER_OTLP_ENDPOINT`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 1.0) -> None:
        self._server.stop(grace_s).wait()

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self._requests += 1
            self._changed.notify_all()

    @property
    def requests(self) -> int:
        """How many Export calls arrived."""
        with self._changed:
            return self._requests

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._changed:
            return list(self._spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        return group_by_trace(self.spans())

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()
            self._requests = 0

    def wait_until(
        self, predicate: Callable[[list[ReceivedSpan]], bool], *, timeout_s: float
    ) -> list[ReceivedSpan]:
        """Block until `predicate(spans)` holds (it is re-checked on every Export), then
        return the spans; raise TimeoutError at the deadline."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self._spans)), timeout_s):
                raise TimeoutError(
                    f"after {timeout_s} s and {self._requests} exports "
                    f"({len(self._spans)} spans), the condition still does not hold"
                )
            return list(self._spans)
