"""The gRPC `Admin` service: operator calls, each checked for an operator key first."""

from __future__ import annotations

import logging
import re
from typing import Any

from spillway.v1 import admin_pb2 as pb
from spillway.v1 import admin_pb2_grpc

from scheduler.api.auth import ApiKeys, KeyRecord, Scope
from scheduler.api.convert import timestamp
from scheduler.api.errors import InvalidArgument
from scheduler.api.service import rpc_errors
from scheduler.dispatch.spillover import Spillover
from scheduler.policy import SpillControl
from scheduler.store.jobstore import JobStore

log = logging.getLogger(__name__)

Ctx = Any
_TENANT = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_SCOPES = {
    pb.KEY_SCOPE_UNSPECIFIED: Scope.TENANT,
    pb.KEY_SCOPE_TENANT: Scope.TENANT,
    pb.KEY_SCOPE_OPERATOR: Scope.OPERATOR,
}
_MAX_NAME = 256


_SPILL = {
    pb.SPILL_CONTROL_AUTO: SpillControl.AUTO,
    pb.SPILL_CONTROL_OFF: SpillControl.OFF,
    pb.SPILL_CONTROL_FORCE: SpillControl.FORCE,
}
_SPILL_PB = {v: k for k, v in _SPILL.items()}


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, keys: ApiKeys, spillover: Spillover, store: JobStore) -> None:
        self._keys = keys
        self._spillover = spillover
        self._store = store

    @rpc_errors
    async def SetControls(
        self, request: pb.SetControlsRequest, context: Ctx
    ) -> pb.SetControlsResponse:
        operator = await self._keys.operator(context.invocation_metadata())
        if request.spill not in (pb.SPILL_CONTROL_UNSPECIFIED, *_SPILL):
            raise InvalidArgument("spill", "must be AUTO, OFF or FORCE")
        if request.dispatch not in (
            pb.DISPATCH_CONTROL_UNSPECIFIED,
            pb.DISPATCH_CONTROL_RUNNING,
            pb.DISPATCH_CONTROL_PAUSED,
        ):
            raise InvalidArgument("dispatch", "must be RUNNING or PAUSED")
        if request.batch not in (
            pb.BATCH_CONTROL_UNSPECIFIED,
            pb.BATCH_CONTROL_INHOUSE,
            pb.BATCH_CONTROL_SPILL,
        ):
            raise InvalidArgument("batch", "must be INHOUSE or SPILL")
        controls = await self._spillover.set_controls(
            spill=_SPILL.get(request.spill),
            dispatch_paused=None
            if request.dispatch == pb.DISPATCH_CONTROL_UNSPECIFIED
            else request.dispatch == pb.DISPATCH_CONTROL_PAUSED,
            batch_spill=None
            if request.batch == pb.BATCH_CONTROL_UNSPECIFIED
            else request.batch == pb.BATCH_CONTROL_SPILL,
            by=f"operator of {operator.tenant}",
        )
        return pb.SetControlsResponse(
            spill=_SPILL_PB[controls.spill],
            dispatch=pb.DISPATCH_CONTROL_PAUSED
            if controls.dispatch_paused
            else pb.DISPATCH_CONTROL_RUNNING,
            batch=pb.BATCH_CONTROL_SPILL if controls.batch_spill else pb.BATCH_CONTROL_INHOUSE,
        )

    @rpc_errors
    async def CancelQueuedJobs(
        self, request: pb.CancelQueuedJobsRequest, context: Ctx
    ) -> pb.CancelQueuedJobsResponse:
        operator = await self._keys.operator(context.invocation_metadata())
        if not _TENANT.match(request.tenant):
            raise InvalidArgument("tenant", "must be 1-64 of A-Z a-z 0-9 _ -")
        cancelled = await self._store.cancel_queued(request.tenant)
        log.warning(
            "operator of %s cancelled %d queued jobs of tenant %s",
            operator.tenant,
            cancelled,
            request.tenant,
        )
        return pb.CancelQueuedJobsResponse(cancelled=cancelled)

    @rpc_errors
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Ctx
    ) -> pb.CreateApiKeyResponse:
        operator = await self._keys.operator(context.invocation_metadata())
        if not _TENANT.match(request.tenant):
            raise InvalidArgument("tenant", "must be 1-64 of A-Z a-z 0-9 _ -")
        if request.scope not in _SCOPES:
            raise InvalidArgument("scope", "must be KEY_SCOPE_TENANT or KEY_SCOPE_OPERATOR")
        if len(request.name) > _MAX_NAME:
            raise InvalidArgument("name", f"must be at most {_MAX_NAME} characters")
        secret, record = await self._keys.create(
            request.tenant, _SCOPES[request.scope], request.name, request.ttl_seconds
        )
        log.info(
            "operator of %s created %s key %s for tenant %s",
            operator.tenant,
            record.scope.value,
            record.id,
            record.tenant,
        )
        return pb.CreateApiKeyResponse(key=_to_proto(record), secret=secret)

    @rpc_errors
    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Ctx
    ) -> pb.ListApiKeysResponse:
        await self._keys.operator(context.invocation_metadata())
        return pb.ListApiKeysResponse(keys=[_to_proto(r) for r in await self._keys.list()])

    @rpc_errors
    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Ctx
    ) -> pb.RevokeApiKeyResponse:
        operator = await self._keys.operator(context.invocation_metadata())
        record = await self._keys.revoke(request.id)
        log.warning(
            "operator of %s revoked key %s of tenant %s", operator.tenant, record.id, record.tenant
        )
        return pb.RevokeApiKeyResponse(key=_to_proto(record))


def _to_proto(record: KeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        id=record.id,
        tenant=record.tenant,
        scope=pb.KEY_SCOPE_OPERATOR if record.scope is Scope.OPERATOR else pb.KEY_SCOPE_TENANT,
        name=record.name,
        created_at=timestamp(record.created_ms),
        expires_at=timestamp(record.expires_ms),
        hint=record.hint,
    )
