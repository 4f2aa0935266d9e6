"""The HTTP API's request and response bodies (pydantic; unknown fields are errors).

``request_model(config, arms)`` narrows ``RankRequest`` to one world and its arms (user and
item id ranges, the recall size, arm names), so every bad input is a 422 with a message from
validation, and ``/openapi.json`` states the bounds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model

from simulator.config import WorldConfig


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


NonNegative = Annotated[StrictInt, Field(ge=0)]


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
    item = Annotated[StrictInt, Field(ge=0, lt=config.n_items)]
    return create_model(
        "RankRequest",
        __base__=RankRequest,
        __doc__=RankRequest.__doc__,
        user_id=(Annotated[StrictInt, Field(ge=0, lt=config.n_users)], ...),
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
