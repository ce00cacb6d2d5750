import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_QUEUED: _ClassVar[JobStatus]
    JOB_STATUS_IN_PROGRESS: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]

class PriorityClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_CLASS_UNSPECIFIED: _ClassVar[PriorityClass]
    PRIORITY_CLASS_INTERACTIVE: _ClassVar[PriorityClass]
    PRIORITY_CLASS_BATCH: _ClassVar[PriorityClass]

class ListOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIST_ORDER_UNSPECIFIED: _ClassVar[ListOrder]
    LIST_ORDER_DESC: _ClassVar[ListOrder]
    LIST_ORDER_ASC: _ClassVar[ListOrder]

class SpilloverMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPILLOVER_MODE_UNSPECIFIED: _ClassVar[SpilloverMode]
    SPILLOVER_MODE_NORMAL: _ClassVar[SpilloverMode]
    SPILLOVER_MODE_SPILL: _ClassVar[SpilloverMode]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_QUEUED: JobStatus
JOB_STATUS_IN_PROGRESS: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus
PRIORITY_CLASS_UNSPECIFIED: PriorityClass
PRIORITY_CLASS_INTERACTIVE: PriorityClass
PRIORITY_CLASS_BATCH: PriorityClass
LIST_ORDER_UNSPECIFIED: ListOrder
LIST_ORDER_DESC: ListOrder
LIST_ORDER_ASC: ListOrder
SPILLOVER_MODE_UNSPECIFIED: SpilloverMode
SPILLOVER_MODE_NORMAL: SpilloverMode
SPILLOVER_MODE_SPILL: SpilloverMode

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobOutput(_message.Message):
    __slots__ = ("bucket", "key", "bytes", "sha256", "duration_seconds", "content_type")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    key: str
    bytes: int
    sha256: str
    duration_seconds: float
    content_type: str
    def __init__(self, bucket: _Optional[str] = ..., key: _Optional[str] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., content_type: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "status", "progress", "model", "prompt", "seconds", "size", "priority", "created_at", "started_at", "completed_at", "expires_at", "error", "pool", "attempt", "output", "idempotency_key", "trace_id", "deadline", "placement_reason", "priority_class", "inhouse_only")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_REASON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    INHOUSE_ONLY_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: JobStatus
    progress: int
    model: str
    prompt: str
    seconds: int
    size: str
    priority: int
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    error: JobError
    pool: str
    attempt: int
    output: JobOutput
    idempotency_key: str
    trace_id: str
    deadline: _timestamp_pb2.Timestamp
    placement_reason: str
    priority_class: PriorityClass
    inhouse_only: bool
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., progress: _Optional[int] = ..., model: _Optional[str] = ..., prompt: _Optional[str] = ..., seconds: _Optional[int] = ..., size: _Optional[str] = ..., priority: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., pool: _Optional[str] = ..., attempt: _Optional[int] = ..., output: _Optional[_Union[JobOutput, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., trace_id: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placement_reason: _Optional[str] = ..., priority_class: _Optional[_Union[PriorityClass, str]] = ..., inhouse_only: _Optional[bool] = ...) -> None: ...

class SubmitRenderRequest(_message.Message):
    __slots__ = ("prompt", "model", "seconds", "size", "priority", "idempotency_key", "deadline_seconds", "priority_class", "inhouse_only")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    INHOUSE_ONLY_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: str
    seconds: int
    size: str
    priority: int
    idempotency_key: str
    deadline_seconds: int
    priority_class: PriorityClass
    inhouse_only: bool
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[str] = ..., seconds: _Optional[int] = ..., size: _Optional[str] = ..., priority: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., deadline_seconds: _Optional[int] = ..., priority_class: _Optional[_Union[PriorityClass, str]] = ..., inhouse_only: _Optional[bool] = ...) -> None: ...

class SubmitRenderResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job", "poll_after_ms")
    JOB_FIELD_NUMBER: _ClassVar[int]
    POLL_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    poll_after_ms: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., poll_after_ms: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "order")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    order: ListOrder
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order: _Optional[_Union[ListOrder, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "has_more", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    has_more: bool
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., has_more: _Optional[bool] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class RetryJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RetryJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("id", "deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id", "after_event_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    after_event_id: str
    def __init__(self, id: _Optional[str] = ..., after_event_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("id", "job_id", "type", "status", "progress", "time", "error", "pool", "terminal", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    type: str
    status: JobStatus
    progress: int
    time: _timestamp_pb2.Timestamp
    error: JobError
    pool: str
    terminal: bool
    reason: str
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., progress: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., pool: _Optional[str] = ..., terminal: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: JobEvent
    def __init__(self, event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class GetJobContentRequest(_message.Message):
    __slots__ = ("id", "expires_in_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    expires_in_seconds: int
    def __init__(self, id: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ...) -> None: ...

class GetJobContentResponse(_message.Message):
    __slots__ = ("url", "expires_at", "output")
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    url: str
    expires_at: _timestamp_pb2.Timestamp
    output: JobOutput
    def __init__(self, url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., output: _Optional[_Union[JobOutput, _Mapping]] = ...) -> None: ...

class GetSpilloverRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("name", "inflight", "cap", "dispatched", "containers", "ready_slots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    READY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    inflight: int
    cap: int
    dispatched: int
    containers: int
    ready_slots: int
    def __init__(self, name: _Optional[str] = ..., inflight: _Optional[int] = ..., cap: _Optional[int] = ..., dispatched: _Optional[int] = ..., containers: _Optional[int] = ..., ready_slots: _Optional[int] = ...) -> None: ...

class InhouseEndpoint(_message.Message):
    __slots__ = ("address", "slots", "busy", "state", "error", "failures")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    address: str
    slots: int
    busy: int
    state: str
    error: str
    failures: int
    def __init__(self, address: _Optional[str] = ..., slots: _Optional[int] = ..., busy: _Optional[int] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., failures: _Optional[int] = ...) -> None: ...

class SpilloverDecision(_message.Message):
    __slots__ = ("target", "count", "reason", "description")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    target: str
    count: int
    reason: str
    description: str
    def __init__(self, target: _Optional[str] = ..., count: _Optional[int] = ..., reason: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ModeChange(_message.Message):
    __slots__ = ("time", "to", "reason", "queued")
    TIME_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    to: SpilloverMode
    reason: str
    queued: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., to: _Optional[_Union[SpilloverMode, str]] = ..., reason: _Optional[str] = ..., queued: _Optional[int] = ..., **kwargs) -> None: ...

class AutoscalerSettings(_message.Message):
    __slots__ = ("min_containers", "buffer_containers", "max_containers", "scaledown_window_seconds", "applied_by", "applied_at")
    MIN_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    BUFFER_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    SCALEDOWN_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    min_containers: int
    buffer_containers: int
    max_containers: int
    scaledown_window_seconds: int
    applied_by: str
    applied_at: _timestamp_pb2.Timestamp
    def __init__(self, min_containers: _Optional[int] = ..., buffer_containers: _Optional[int] = ..., max_containers: _Optional[int] = ..., scaledown_window_seconds: _Optional[int] = ..., applied_by: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSpilloverResponse(_message.Message):
    __slots__ = ("mode", "mode_since", "queued", "high_watermark", "low_watermark", "pools", "decisions", "spent_usd", "budget_usd", "budget_left_usd", "estimated_inhouse_render_ms", "estimated_spill_render_ms", "estimated_cold_start_ms", "recent_changes", "autoscaler_wanted", "autoscaler_applied", "dispatched_since", "spill_available", "endpoints", "spill_control", "dispatch_paused", "controls_set_by", "controls_set_at", "batch_queued", "batch_control", "spent_usd_by_tenant", "control_changes", "metered_containers", "bill_corrected_usd")
    class SpentUsdByTenantEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODE_SINCE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LOW_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_LEFT_USD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_INHOUSE_RENDER_MS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SPILL_RENDER_MS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COLD_START_MS_FIELD_NUMBER: _ClassVar[int]
    RECENT_CHANGES_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALER_WANTED_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALER_APPLIED_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_SINCE_FIELD_NUMBER: _ClassVar[int]
    SPILL_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    SPILL_CONTROL_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_PAUSED_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_SET_BY_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_SET_AT_FIELD_NUMBER: _ClassVar[int]
    BATCH_QUEUED_FIELD_NUMBER: _ClassVar[int]
    BATCH_CONTROL_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_BY_TENANT_FIELD_NUMBER: _ClassVar[int]
    CONTROL_CHANGES_FIELD_NUMBER: _ClassVar[int]
    METERED_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    BILL_CORRECTED_USD_FIELD_NUMBER: _ClassVar[int]
    mode: SpilloverMode
    mode_since: _timestamp_pb2.Timestamp
    queued: int
    high_watermark: int
    low_watermark: int
    pools: _containers.RepeatedCompositeFieldContainer[PoolStatus]
    decisions: _containers.RepeatedCompositeFieldContainer[SpilloverDecision]
    spent_usd: float
    budget_usd: float
    budget_left_usd: float
    estimated_inhouse_render_ms: int
    estimated_spill_render_ms: int
    estimated_cold_start_ms: int
    recent_changes: _containers.RepeatedCompositeFieldContainer[ModeChange]
    autoscaler_wanted: AutoscalerSettings
    autoscaler_applied: AutoscalerSettings
    dispatched_since: _timestamp_pb2.Timestamp
    spill_available: bool
    endpoints: _containers.RepeatedCompositeFieldContainer[InhouseEndpoint]
    spill_control: str
    dispatch_paused: bool
    controls_set_by: str
    controls_set_at: _timestamp_pb2.Timestamp
    batch_queued: int
    batch_control: str
    spent_usd_by_tenant: _containers.ScalarMap[str, float]
    control_changes: _containers.RepeatedCompositeFieldContainer[ControlChange]
    metered_containers: int
    bill_corrected_usd: float
    def __init__(self, mode: _Optional[_Union[SpilloverMode, str]] = ..., mode_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queued: _Optional[int] = ..., high_watermark: _Optional[int] = ..., low_watermark: _Optional[int] = ..., pools: _Optional[_Iterable[_Union[PoolStatus, _Mapping]]] = ..., decisions: _Optional[_Iterable[_Union[SpilloverDecision, _Mapping]]] = ..., spent_usd: _Optional[float] = ..., budget_usd: _Optional[float] = ..., budget_left_usd: _Optional[float] = ..., estimated_inhouse_render_ms: _Optional[int] = ..., estimated_spill_render_ms: _Optional[int] = ..., estimated_cold_start_ms: _Optional[int] = ..., recent_changes: _Optional[_Iterable[_Union[ModeChange, _Mapping]]] = ..., autoscaler_wanted: _Optional[_Union[AutoscalerSettings, _Mapping]] = ..., autoscaler_applied: _Optional[_Union[AutoscalerSettings, _Mapping]] = ..., dispatched_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spill_available: _Optional[bool] = ..., endpoints: _Optional[_Iterable[_Union[InhouseEndpoint, _Mapping]]] = ..., spill_control: _Optional[str] = ..., dispatch_paused: _Optional[bool] = ..., controls_set_by: _Optional[str] = ..., controls_set_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., batch_queued: _Optional[int] = ..., batch_control: _Optional[str] = ..., spent_usd_by_tenant: _Optional[_Mapping[str, float]] = ..., control_changes: _Optional[_Iterable[_Union[ControlChange, _Mapping]]] = ..., metered_containers: _Optional[int] = ..., bill_corrected_usd: _Optional[float] = ...) -> None: ...

class ControlChange(_message.Message):
    __slots__ = ("time", "by", "spill", "dispatch", "batch")
    TIME_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    SPILL_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    by: str
    spill: str
    dispatch: str
    batch: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., by: _Optional[str] = ..., spill: _Optional[str] = ..., dispatch: _Optional[str] = ..., batch: _Optional[str] = ...) -> None: ...
