"""The HTTP API's request and response bodies (pydantic; unknown fields are errors).

``request_model(config, arms)`` narrows ``RankRequest`` to one world and its arms (user and
item id ranges, the recall size, arm names), so every bad input is a 422 with a message from
validation, and ``/openapi.json`` states the bounds. Ids are JSON-Schema integers: ``597`` and
``597.0`` are the same id; ``597.5``, ``"597"`` and ``true`` are not ids.

``ERRORS`` are the error answers every operation declares (``responses=`` of its route), so
``/openapi.json`` documents each status the server returns, with its body.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, create_model

from simulator.config import WorldConfig


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _integral_float_to_int(value: object) -> object:
    """597.0 -> 597 (an integer in JSON Schema); anything else is left to ``StrictInt``, which
    refuses bools, strings and 597.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(**bounds: int) -> type[int]:
    """A JSON-Schema integer within ``bounds`` (``Field``'s ge, lt, ...): an int or an integral
    float, never a bool or a string. (The bounds come before the validator, so that the JSON
    Schema states them.)"""
    return Annotated[StrictInt, Field(**bounds), BeforeValidator(_integral_float_to_int)]  # type: ignore[return-value]


MAX_KEY = 2**53 - 1
"""The largest day, session or page: the largest integer every JSON parser reads exactly (the
schema's bound must be exact where it is read as a float)."""
NonNegative = integer(ge=0, le=MAX_KEY)


class RankRequest(_Body):
    """One page of a session."""

    user_id: NonNegative
    day: NonNegative = 0
    session: NonNegative = 0
    page: NonNegative = Field(default=0, description="Page number in the session; echoed.")
    exclude: list[NonNegative] = Field(
        default_factory=list,
        description="Item ids not to show: what the session already showed, or otherwise excluded.",
    )
    trace: StrictBool = Field(default=False, description="Also return every stage's output.")
    arm: str | None = Field(default=None, description="Force an arm; default: the experiment's assignment.")


def request_model(config: WorldConfig, arms: tuple[str, ...]) -> type[RankRequest]:
    """``RankRequest`` with this world's id ranges and recall size, and these arm names."""
    item = integer(ge=0, lt=config.n_items)
    return create_model(
        "RankRequest",
        __base__=RankRequest,
        __doc__=RankRequest.__doc__,
        user_id=(integer(ge=0, lt=config.n_users), ...),
        exclude=(
            list[item],
            Field(
                default_factory=list,
                max_length=config.recall_size,
                description=RankRequest.model_fields["exclude"].description,
            ),
        ),
        arm=(
            Literal[arms] | None,  # type: ignore[valid-type]
            Field(default=None, description=RankRequest.model_fields["arm"].description),
        ),
    )


class Versions(_Body):
    coarse: str
    fine: str


class Trace(_Body):
    recall: list[int] = Field(description="The recall set, in recall order.")
    coarse: list[int] = Field(description="The coarse top-C after exclusions (the fine input), best first.")
    fine: list[int] = Field(description="The fine top-K, best first.")


class RankResponse(_Body):
    user_id: int
    day: int
    session: int
    page: int
    arm: str
    items: list[int] = Field(description="The page, best first (shorter if candidates run out).")
    scores: list[float] = Field(description="Fine scores of the page's items.")
    versions: Versions
    trace: Trace | None = None


class Health(_Body):
    status: Literal["ok"] = "ok"


class ArmInfo(_Body):
    coarse: str = Field(description="Version of the coarse model being served.")
    spec: str = Field(description="What it was loaded from: a baseline name or a checkpoint path.")
    coarse_size: int
    share: float


class StageInfo(_Body):
    version: str
    spec: str


class VersionInfo(_Body):
    arms: dict[str, ArmInfo]
    fine: StageInfo
    page_size: int
    world: dict[str, int]
    assignment: dict[str, str]


class Message(BaseModel):
    """An error answer: FastAPI's ``HTTPException`` body."""

    detail: str


_SERVE_TEXT = {"text/plain": {"schema": {"type": "string"}}}

BAD_BODY = {400: {"model": Message, "description": "The body is not parsable (e.g. not UTF-8)"}}
"""Declared by the operations that take a body (FastAPI declares their 422)."""
OVERLOAD = {
    503: {
        "model": Message,
        "content": _SERVE_TEXT,
        "description": "Overloaded: the ingress's queue is full (``max_queued_requests``); Serve's proxy"
        " answers in plain text with ``Retry-After``. /healthz: a stage is not ready yet (JSON).",
    }
}
"""Declared by every operation."""
_MESSAGE_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}
NOT_ROUTED = {
    "NotFound": {"description": "404: no such path", "content": _MESSAGE_REF},
    "MethodNotAllowed": {"description": "405: the path does not take this method", "content": _MESSAGE_REF},
}
"""Answers outside the operations (404, 405), in ``components.responses`` of the OpenAPI."""
