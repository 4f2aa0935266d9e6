"""Bring your own ranker: a cascade stage's scorer named ``"module:attribute"``.

The attribute (dots reach inside it: ``"team.rankers:Zoo.two_tower"``) is either

- a scorer: an object with ``score(users (B,), items (B, R)) -> (B, R) float64`` (higher is
  better, a score depending only on its (user, item) pair) and ``version: str`` naming the model
  (the protocol ``policies.rankers.Scorer``), or
- a factory ``f(world, features) -> scorer``, called with the ``simulator.World`` and its
  ``policies.features.FeatureStore`` (a class whose constructor takes them is one).

The module is imported by its name from ``sys.path`` (the working directory is added to it, as
``python -m`` does); only the spec string travels, so every process that ranks (Ray actors,
Serve replicas) imports it itself and must find it (the project root and ``PYTHONPATH`` are on
the workers' path). ``load_custom`` checks the interface and a probe call's output; every
failure is one ``ConfigError`` line. Cheap to import: the user's module is imported on use.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

import numpy as np

from common.config import ConfigError
from policies.baselines import BASELINES
from policies.tasks import Task

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

PROBE_SHAPE = (2, 3)
"""The probe call scores PROBE_SHAPE[1] items for each of PROBE_SHAPE[0] users."""


def is_custom_spec(spec: str) -> bool:
    """``spec`` names a Python object ("module:attribute"), not a baseline or a file."""
    return bool(_SPEC.match(spec)) and not spec.endswith((".pt", ".toml"))


def is_ranker_name(spec: str) -> bool:
    """A baseline or a "module:attribute" spec: a name, never resolved as a file path."""
    return spec in BASELINES or is_custom_spec(spec)


def check_coarse_score(score: str, coarse: str) -> None:
    """An arm's ``coarse_score``: empty, or a task (``policies.tasks.Task``) for a coarse model
    (a checkpoint or training config, not a baseline or your own ranker)."""
    if not score:
        return
    if score not in list(Task):
        raise ConfigError(f"must be one of {[str(t) for t in Task]} or empty", key="coarse_score")
    if is_ranker_name(coarse):
        raise ConfigError("applies to a coarse checkpoint or training config", key="coarse_score")


def import_custom(spec: str) -> Any:
    """The object ``"module:attribute"`` names; a missing module or attribute is a ConfigError."""
    if not is_custom_spec(spec):
        raise ConfigError(f"{spec!r} is not of the form module:attribute")
    module_name, attribute = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"ranker {spec}: no module named {err.name!r} (is it on PYTHONPATH?)") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"ranker {spec}: {getattr(obj, '__name__', obj)!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def _is_scorer(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "score", None))


def _check_interface(spec: str, scorer: Any) -> None:
    missing = [
        what
        for what, ok in (
            ("a method score(users, items)", callable(getattr(scorer, "score", None))),
            ("a str version", isinstance(getattr(scorer, "version", None), str)),
        )
        if not ok
    ]
    if missing:
        raise ConfigError(
            f"ranker {spec}: {type(scorer).__name__} object lacks {' and '.join(missing)}; a ranker is a "
            "scorer (score(users, items) -> scores, version) or a factory f(world, features) returning one"
        )


def custom_version(spec: str) -> str | None:
    """The version of the scorer ``spec`` names without building it; None for a factory (its
    scorer's version needs the world)."""
    obj = import_custom(spec)
    if not _is_scorer(obj) and callable(obj):
        return None
    _check_interface(spec, obj)
    return obj.version


def load_custom(spec: str, world: Any, features: Any) -> Any:
    """The scorer ``spec`` names (a factory is called with ``world`` and ``features``), checked:
    it has ``score`` and a str ``version``, and a probe call returns (B, R) float64."""
    obj = import_custom(spec)
    scorer = obj
    if not _is_scorer(obj) and callable(obj):
        try:
            scorer = obj(world, features)
        except Exception as err:
            raise ConfigError(f"ranker {spec}: the factory failed: {type(err).__name__}: {err}") from None
    _check_interface(spec, scorer)
    _probe(spec, scorer, world.config.n_users, world.config.n_items)
    return scorer


def _probe(spec: str, scorer: Any, n_users: int, n_items: int) -> None:
    """Score PROBE_SHAPE items of the first users; the output must be (B, R) float64."""
    batch, width = PROBE_SHAPE
    users = np.arange(batch, dtype=np.int64) % n_users
    items = np.arange(batch * width, dtype=np.int64).reshape(batch, width) % n_items
    call = f"score(users {users.shape}, items {items.shape})"
    try:
        scores = scorer.score(users, items)
    except Exception as err:
        failure = f"{type(err).__name__}: {err}"
        raise ConfigError(f"ranker {spec}: the probe call {call} failed: {failure}") from None
    shape, dtype = getattr(scores, "shape", None), getattr(scores, "dtype", None)
    if not isinstance(scores, np.ndarray) or shape != items.shape or dtype != np.float64:
        got = f"{type(scores).__name__} of shape {shape} and dtype {dtype}"
        raise ConfigError(
            f"ranker {spec}: the probe call {call} returned {got}; expected a numpy array of shape "
            f"{items.shape} and dtype float64"
        )
