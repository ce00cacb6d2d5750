"""Errors the renderer raises, each carrying the gRPC status it maps to.

RendererError
├── InvalidRenderRequest  INVALID_ARGUMENT: the request can never succeed as sent
├── RendererBusy          RESOURCE_EXHAUSTED: every slot is rendering; retry elsewhere
├── RenderCancelled       CANCELLED: the caller went away, so the render stopped
├── RenderRecalled        ABORTED: the scheduler took the job back before it started
└── RenderFailed          INTERNAL: the engine, decoder or encoder broke its contract
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class RendererError(Exception):
    """Base of every error the renderer raises on purpose."""

    status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL


class InvalidRenderRequest(RendererError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT


class RendererBusy(RendererError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RenderCancelled(RendererError):
    status_code = grpc.StatusCode.CANCELLED


class RenderRecalled(RendererError):
    """A spilled input found its start gate closed (`renderer.start_gate`): the
    scheduler recalled its job first, so it did no work."""

    status_code = grpc.StatusCode.ABORTED


class RenderFailed(RendererError):
    status_code = grpc.StatusCode.INTERNAL
