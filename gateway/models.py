"""``/v1/models``: the models this deployment renders, in the shape of OpenAI's Models
API, so that the official client's ``models.list()`` and ``models.retrieve()`` work.

The list is the gateway's ``SPILLWAY_MODELS``, the variable the scheduler reads to accept
a model on submit; deploy both with the same value.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.auth import CallerMetadata
from gateway.backends import backends
from gateway.errors import ApiError, ErrorBody

router = APIRouter(prefix="/v1", responses={"default": {"model": ErrorBody}})

# A fixed epoch: the field is required by the client, and the models' real release
# dates are not ours to know.
_CREATED = 0
_OWNER = "spillway"


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": _OWNER}


# The caller's key is required as on every /v1 route; it is checked by the scheduler,
# which these routes do not call.
@router.get("/models", responses={200: {"model": ModelList}})
async def list_models(request: Request, _: CallerMetadata) -> JSONResponse:
    """The models a video can be rendered with; the first is the default."""
    models = backends(request).config.models
    return JSONResponse({"object": "list", "data": [_model(m) for m in models]})


@router.get("/models/{model}", responses={200: {"model": Model}})
async def retrieve_model(request: Request, _: CallerMetadata, model: str) -> JSONResponse:
    if model not in backends(request).config.models:
        raise ApiError(
            404,
            f"The model {model!r} does not exist.",
            code="model_not_found",
            param="model",
        )
    return JSONResponse(_model(model))
