from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderRequest(_message.Message):
    __slots__ = ("job_id", "prompt", "model", "seconds", "width", "height", "fps", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    prompt: str
    model: str
    seconds: int
    width: int
    height: int
    fps: int
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, job_id: _Optional[str] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., seconds: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("progress", "chunk", "metadata")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    progress: RenderProgress
    chunk: bytes
    metadata: RenderMetadata
    def __init__(self, progress: _Optional[_Union[RenderProgress, _Mapping]] = ..., chunk: _Optional[bytes] = ..., metadata: _Optional[_Union[RenderMetadata, _Mapping]] = ...) -> None: ...

class RenderProgress(_message.Message):
    __slots__ = ("percent", "frames_done", "frames_total")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    percent: int
    frames_done: int
    frames_total: int
    def __init__(self, percent: _Optional[int] = ..., frames_done: _Optional[int] = ..., frames_total: _Optional[int] = ...) -> None: ...

class RenderMetadata(_message.Message):
    __slots__ = ("container_id", "cold_start", "boot_seconds", "restore_seconds", "render_seconds", "bytes", "sha256", "duration_seconds", "frames", "fps", "engine")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    BOOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RENDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    cold_start: bool
    boot_seconds: float
    restore_seconds: float
    render_seconds: float
    bytes: int
    sha256: str
    duration_seconds: float
    frames: int
    fps: int
    engine: str
    def __init__(self, container_id: _Optional[str] = ..., cold_start: _Optional[bool] = ..., boot_seconds: _Optional[float] = ..., restore_seconds: _Optional[float] = ..., render_seconds: _Optional[float] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., frames: _Optional[int] = ..., fps: _Optional[int] = ..., engine: _Optional[str] = ...) -> None: ...
