"""The scheduler's errors, with their public mapping carried as data.

    SpillwayError                  grpc code           reason
    ├── InvalidArgument            INVALID_ARGUMENT    invalid_value, prompt_too_long, ...
    ├── Unauthenticated            UNAUTHENTICATED     unauthenticated
    ├── NotFound                   NOT_FOUND           not_found
    ├── FailedPrecondition         FAILED_PRECONDITION video_not_ready, ...
    ├── ResourceExhausted          RESOURCE_EXHAUSTED  queue_full (with RetryInfo)
    └── Unavailable                UNAVAILABLE         unavailable

`to_status` is the one adapter from these to a gRPC status with rich details
(`google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`); no handler builds a status itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "spillway"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class SpillwayError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason = "internal"
    retry_after_s: float | None = None

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def violations(self) -> Sequence[FieldViolation]:
        return ()


class InvalidArgument(SpillwayError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_value"

    def __init__(self, field: str, description: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {description}", reason=reason)
        self._violations = (FieldViolation(field, description),)

    def violations(self) -> Sequence[FieldViolation]:
        return self._violations


class Unauthenticated(SpillwayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class PermissionDenied(SpillwayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class NotFound(SpillwayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class FailedPrecondition(SpillwayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "failed_precondition"


class ResourceExhausted(SpillwayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"

    def __init__(self, message: str, *, retry_after_s: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


class Unavailable(SpillwayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"
    retry_after_s = 1.0


def to_status(error: SpillwayError) -> grpc.Status:
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if violations := error.violations():
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in violations
                    ]
                )
            )
        )
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(
            code=getattr(code_pb2, error.code.name),
            message=error.message,
            details=details,
        )
    )
    return status


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
