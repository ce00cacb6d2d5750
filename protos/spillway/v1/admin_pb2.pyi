import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpillControl(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPILL_CONTROL_UNSPECIFIED: _ClassVar[SpillControl]
    SPILL_CONTROL_AUTO: _ClassVar[SpillControl]
    SPILL_CONTROL_OFF: _ClassVar[SpillControl]
    SPILL_CONTROL_FORCE: _ClassVar[SpillControl]

class DispatchControl(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISPATCH_CONTROL_UNSPECIFIED: _ClassVar[DispatchControl]
    DISPATCH_CONTROL_RUNNING: _ClassVar[DispatchControl]
    DISPATCH_CONTROL_PAUSED: _ClassVar[DispatchControl]

class BatchControl(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_CONTROL_UNSPECIFIED: _ClassVar[BatchControl]
    BATCH_CONTROL_INHOUSE: _ClassVar[BatchControl]
    BATCH_CONTROL_SPILL: _ClassVar[BatchControl]

class KeyScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_SCOPE_UNSPECIFIED: _ClassVar[KeyScope]
    KEY_SCOPE_TENANT: _ClassVar[KeyScope]
    KEY_SCOPE_OPERATOR: _ClassVar[KeyScope]
SPILL_CONTROL_UNSPECIFIED: SpillControl
SPILL_CONTROL_AUTO: SpillControl
SPILL_CONTROL_OFF: SpillControl
SPILL_CONTROL_FORCE: SpillControl
DISPATCH_CONTROL_UNSPECIFIED: DispatchControl
DISPATCH_CONTROL_RUNNING: DispatchControl
DISPATCH_CONTROL_PAUSED: DispatchControl
BATCH_CONTROL_UNSPECIFIED: BatchControl
BATCH_CONTROL_INHOUSE: BatchControl
BATCH_CONTROL_SPILL: BatchControl
KEY_SCOPE_UNSPECIFIED: KeyScope
KEY_SCOPE_TENANT: KeyScope
KEY_SCOPE_OPERATOR: KeyScope

class SetControlsRequest(_message.Message):
    __slots__ = ("spill", "dispatch", "batch")
    SPILL_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    spill: SpillControl
    dispatch: DispatchControl
    batch: BatchControl
    def __init__(self, spill: _Optional[_Union[SpillControl, str]] = ..., dispatch: _Optional[_Union[DispatchControl, str]] = ..., batch: _Optional[_Union[BatchControl, str]] = ...) -> None: ...

class SetControlsResponse(_message.Message):
    __slots__ = ("spill", "dispatch", "batch")
    SPILL_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    spill: SpillControl
    dispatch: DispatchControl
    batch: BatchControl
    def __init__(self, spill: _Optional[_Union[SpillControl, str]] = ..., dispatch: _Optional[_Union[DispatchControl, str]] = ..., batch: _Optional[_Union[BatchControl, str]] = ...) -> None: ...

class CancelQueuedJobsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class CancelQueuedJobsResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    def __init__(self, cancelled: _Optional[int] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "tenant", "scope", "name", "created_at", "expires_at", "hint")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    scope: KeyScope
    name: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    hint: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., scope: _Optional[_Union[KeyScope, str]] = ..., name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hint: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "scope", "name", "ttl_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    scope: KeyScope
    name: str
    ttl_seconds: int
    def __init__(self, tenant: _Optional[str] = ..., scope: _Optional[_Union[KeyScope, str]] = ..., name: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...
