"""What a ranker scores (cheap to import: configs validate against it before torch loads)."""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    """What a ranker scores: the coarse ranker's tasks, in the order of its output logits, and
    gmv, expected GMV (a score of the purchase head, not a logit of its own)."""

    EXPOSURE = "exposure"
    CLICK = "click"
    PURCHASE = "purchase"
    GMV = "gmv"

    @property
    def head(self) -> Task:
        """The task whose logit this score reads (gmv: purchase)."""
        return Task.PURCHASE if self is Task.GMV else self

    @property
    def index(self) -> int:
        """Position of this score's logit in the model output (..., n_tasks)."""
        return list(Task).index(self.head)


HEADS = (Task.EXPOSURE, Task.CLICK, Task.PURCHASE)
"""The tasks with a logit of their own: what a coarse model trains and can evaluate by."""
