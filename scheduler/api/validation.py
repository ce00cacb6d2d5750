"""Validation of what callers send; field names are the REST parameter names."""

from __future__ import annotations

import re
from collections.abc import Sequence

from scheduler.api.errors import InvalidArgument, NotFound
from scheduler.store.jobs import JobSpec, PriorityClass, is_job_id

MAX_PROMPT_CHARS = 4000
MAX_IDEMPOTENCY_KEY_CHARS = 255
SECONDS = (4, 8, 12)
SIZES = {
    "720x1280": (720, 1280),
    "1280x720": (1280, 720),
    "1024x1792": (1024, 1792),
    "1792x1024": (1792, 1024),
}
DEFAULT_SECONDS = 4
DEFAULT_SIZE = "720x1280"
MAX_PRIORITY = 9
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
# A Redis stream id: milliseconds and a sequence number, each an unsigned 64-bit integer.
# ASCII digits only, where \d would also take other scripts' digits, which Redis refuses.
_EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_STREAM_ID_PART_MAX = 2**64 - 1


def validate_spec(
    *,
    prompt: str,
    model: str,
    seconds: int,
    size: str,
    priority: int,
    models: Sequence[str],
    priority_class: PriorityClass = PriorityClass.INTERACTIVE,
    inhouse_only: bool = False,
) -> JobSpec:
    if not prompt.strip():
        raise InvalidArgument("prompt", "must not be empty", reason="missing_prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            "prompt",
            f"is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            reason="prompt_too_long",
        )
    if "\x00" in prompt:
        raise InvalidArgument("prompt", "must not contain NUL characters")
    model = model or models[0]
    if model not in models:
        raise InvalidArgument(
            "model",
            f"unknown model {model!r}; available: {', '.join(models)}",
            reason="unknown_model",
        )
    seconds = seconds or DEFAULT_SECONDS
    if seconds not in SECONDS:
        raise InvalidArgument(
            "seconds",
            f"unsupported value {seconds}; supported: {', '.join(map(str, SECONDS))}",
            reason="unsupported_seconds",
        )
    size = size or DEFAULT_SIZE
    if size not in SIZES:
        raise InvalidArgument(
            "size",
            f"unsupported value {size!r}; supported: {', '.join(SIZES)}",
            reason="unsupported_size",
        )
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidArgument("priority", f"must be 0 to {MAX_PRIORITY}, got {priority}")
    width, height = SIZES[size]
    return JobSpec(
        prompt=prompt,
        model=model,
        seconds=seconds,
        width=width,
        height=height,
        priority=priority,
        priority_class=priority_class,
        inhouse_only=inhouse_only,
    )


def validate_idempotency_key(key: str) -> str:
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(
            "idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )
    if not key.isprintable():
        raise InvalidArgument("idempotency_key", "must be printable characters")
    return key


def validate_job_id(job_id: str, field: str = "id") -> str:
    if not is_job_id(job_id):
        raise InvalidArgument(
            field,
            f"malformed video id {job_id[:80]!r}; expected video_<32 hex digits>",
            reason="invalid_id",
        )
    return job_id


MAX_DEADLINE_S = 7 * 86_400


def validate_deadline(deadline_s: int) -> int:
    """Seconds after submit at which the job is useless; 0 for none."""
    if deadline_s > MAX_DEADLINE_S:
        raise InvalidArgument(
            "deadline_seconds", f"must be 1 to {MAX_DEADLINE_S} (7 days), or 0 for none"
        )
    return deadline_s


def require_job_id(job_id: str) -> str:
    """An id that cannot be one of ours names no video the caller can see: NOT_FOUND, as
    OpenAI answers for any id it does not know (its client raises NotFoundError)."""
    if not is_job_id(job_id):
        raise NotFound(f"video {job_id[:80]!r} not found")
    return job_id


def validate_page_size(page_size: int) -> int:
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("limit", f"must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
    return page_size


def validate_event_id(event_id: str) -> str:
    """An event id to resume after, or "" for the first event. Checked here because Redis
    refuses an out-of-range stream id with a bare error the caller could not act on."""
    match = _EVENT_ID.fullmatch(event_id)
    if event_id and (match is None or max(map(int, match.groups())) > _STREAM_ID_PART_MAX):
        raise InvalidArgument(
            "after",
            f"invalid event id {event_id[:40]!r}; expected <ms>-<seq>, each 0 to 2^64-1",
        )
    return event_id
