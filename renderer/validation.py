"""What a renderer accepts: a RenderRequest checked and turned into a RenderSpec."""

from __future__ import annotations

from spillway.v1 import renderer_pb2

from renderer.errors import InvalidRenderRequest
from renderer.pipeline import RenderSpec

MIN_SECONDS, MAX_SECONDS = 1, 60
MIN_SIDE_PX, MAX_SIDE_PX = 16, 4096
MAX_FPS = 120


def render_spec(request: renderer_pb2.RenderRequest, default_fps: int) -> RenderSpec:
    """The request as a RenderSpec, or InvalidRenderRequest naming every bad field."""
    problems = []
    if not request.prompt.strip():
        problems.append("prompt must not be empty")
    if not MIN_SECONDS <= request.seconds <= MAX_SECONDS:
        problems.append(
            f"seconds must be between {MIN_SECONDS} and {MAX_SECONDS}, got {request.seconds}"
        )
    for side in ("width", "height"):
        value = getattr(request, side)
        if not MIN_SIDE_PX <= value <= MAX_SIDE_PX or value % 2:
            problems.append(
                f"{side} must be an even number of pixels between {MIN_SIDE_PX} and "
                f"{MAX_SIDE_PX}, got {value}"
            )
    if request.fps > MAX_FPS:
        problems.append(
            f"fps must be between 1 and {MAX_FPS}, or 0 for this renderer's default "
            f"({default_fps}), got {request.fps}"
        )
    if problems:
        raise InvalidRenderRequest("invalid render request: " + "; ".join(problems))
    return RenderSpec(
        job_id=request.job_id,
        prompt=request.prompt,
        model=request.model,
        seconds=request.seconds,
        width=request.width,
        height=request.height,
        fps=request.fps or default_fps,
    )
