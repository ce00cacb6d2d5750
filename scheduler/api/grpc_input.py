"""Requests whose bytes do not parse answer INVALID_ARGUMENT, not UNKNOWN.

gRPC parses a request before its handler runs, so no handler's error mapping sees a
protobuf `DecodeError`, and gRPC answers it UNKNOWN ("Unexpected <class 'DecodeError'>"),
which reads as the server's fault. `DecodeRequests` hands each unary request to its
handler as bytes and parses it there, where a failure aborts with the one error adapter,
`to_status`. Requests that stream in (server reflection) pass through unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from scheduler.api.errors import InvalidArgument, to_status

# grpcio ships no type information; its handlers, contexts and call details are untyped.
Behavior = Callable[[Any, Any], Any]
Parse = Callable[[bytes], Any]


class DecodeRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Parses every unary request inside its handler, answering INVALID_ARGUMENT when
    the bytes are not the method's request message."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        parse: Parse = handler.request_deserializer
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _parsing(handler.unary_stream, parse),
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            _parsing(handler.unary_unary, parse),
            response_serializer=handler.response_serializer,
        )


def _parsing(behavior: Behavior, parse: Parse) -> Behavior:
    """`behavior`, taking the request as bytes. A streaming handler is either an async
    generator or a coroutine that writes to its context (the health service's Watch),
    and gRPC tells them apart by their kind, so the wrapper keeps the kind."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: bytes, context: Any) -> AsyncIterator[Any]:
            async for response in behavior(await _parse(parse, request, context), context):
                yield response

        return stream

    async def call(request: bytes, context: Any) -> Any:
        return await behavior(await _parse(parse, request, context), context)

    return call


async def _parse(parse: Parse, request: bytes, context: Any) -> Any:
    try:
        return parse(request)
    except DecodeError as exc:
        error = InvalidArgument(
            "request", f"could not be decoded: {exc}", reason="malformed_request"
        )
    await context.abort_with_status(to_status(error))
    raise AssertionError("unreachable: abort_with_status raises")
