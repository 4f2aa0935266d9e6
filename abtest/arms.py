"""Arms: model specs resolved to checkpoints before an experiment, and cascades built from them.

``resolve_arms`` is the step *before* the engine (``run_ab.py``, tuning or a caller runs it):
it trains missing models (``policies.train.ensure_checkpoint``) and returns the config with
every used spec a baseline name, a "module:attribute" ranker of your own (``policies.custom``)
or an absolute checkpoint path. The engine only reads those (``arm_specs``) and refuses a
training config, so it never trains. Specs are strings wherever cascades are built (this
process, Ray actors, Serve replicas): each process imports a custom ranker itself.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from abtest.config import BASELINES, ArmConfig, ExperimentConfig
from policies.cascade import Cascade, CascadeSizes
from policies.checkpoint import load_checkpoint
from policies.custom import custom_version, is_custom_spec, is_ranker_name, load_custom
from policies.features import FeatureStore
from policies.rankers import load_scorer
from simulator.config import ConfigError, WorldConfig, load_world_config
from simulator.world import World


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """An arm's resolved rankers: baseline names, "module:attribute" specs or absolute
    checkpoint paths; ``world`` is the experiment's world spec (a custom factory's version
    needs the world); ``coarse_score`` what the coarse model ranks by ("" = its checkpoint's)."""

    coarse: str
    fine: str
    coarse_size: int
    world: str
    coarse_score: str = ""


def check_coarse_sizes(config: ExperimentConfig, world_config: WorldConfig) -> None:
    """Every arm's coarse cut fits in the world's recall set (checked before any training)."""
    for name, arm in config.arms.items():
        if arm.coarse_size > world_config.recall_size:
            raise ConfigError(
                f"[arms.{name}] coarse_size = {arm.coarse_size} exceeds the world's recall size "
                f"({world_config.recall_size})"
            )


def used_arms(config: ExperimentConfig) -> dict[str, ArmConfig]:
    """The arm config each arm runs: its own, or the control's in A/A mode."""
    return {name: config.arms[config.control if config.assignment.aa else name] for name in config.arm_names}


def resolve_arms(
    config: ExperimentConfig,
    world_config: WorldConfig,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> ExperimentConfig:
    """``config`` with the specs of every used arm resolved: baselines and custom rankers
    unchanged, checkpoints made absolute, training configs trained first if their checkpoint
    is missing."""
    from policies.train import ensure_checkpoint  # noqa: PLC0415 (the training stack only here)

    check_coarse_sizes(config, world_config)
    resolved: dict[str, str] = {}

    def resolve(spec: str, kind: str) -> str:
        if spec not in resolved:
            resolved[spec] = spec if is_ranker_name(spec) else ensure_checkpoint(spec, kind, progress, log)
        return resolved[spec]

    arms = dict(config.arms)
    for name in dict.fromkeys(config.control if config.assignment.aa else n for n in config.arm_names):
        arm = config.arms[name]
        coarse, fine = resolve(arm.coarse, "coarse"), resolve(arm.fine, "fine")
        arms[name] = dataclasses.replace(arm, coarse=coarse, fine=fine)
    return dataclasses.replace(config, arms=arms)


def arm_specs(config: ExperimentConfig) -> dict[str, ArmSpec]:
    """Every arm's resolved rankers; a training config (not resolved by ``resolve_arms``) or a
    missing checkpoint is a ConfigError."""
    out = {}
    for name, arm in used_arms(config).items():
        coarse, fine = (
            _resolved(name, stage, spec) for stage, spec in (("coarse", arm.coarse), ("fine", arm.fine))
        )
        out[name] = ArmSpec(coarse, fine, arm.coarse_size, config.world, arm.coarse_score)
    return out


def check_custom_rankers(config: ExperimentConfig) -> None:
    """Load every "module:attribute" ranker the used arms name on the experiment's world and
    probe it (``policies.custom.load_custom``): a ConfigError before any traffic."""
    for arm in used_arms(config).values():
        for spec in (arm.coarse, arm.fine):
            if is_custom_spec(spec):
                load_custom(spec, *_world_and_features(config.world))


@functools.lru_cache(maxsize=1)
def _world_and_features(world: str) -> tuple[World, FeatureStore]:
    """The world of a spec and its features, built once (custom factories need them outside
    the executors: checks and versions)."""
    built = World(load_world_config(world))
    return built, FeatureStore.from_world(built)


def _resolved(arm: str, stage: str, spec: str) -> str:
    """A baseline name, a custom ranker, or the absolute path of an existing checkpoint."""
    if is_ranker_name(spec):
        return spec
    if not spec.endswith(".pt"):
        raise ConfigError(
            f"[arms.{arm}] {stage} = {spec!r} is a training config: the engine does not train; "
            "resolve the arms first (abtest.arms.resolve_arms)"
        )
    if not Path(spec).is_file():
        raise ConfigError(f"checkpoint {spec} does not exist")
    return str(Path(spec).resolve())


def build_cascades(world: World, arms: Mapping[str, ArmSpec]) -> dict[str, Cascade]:
    """One in-process cascade per arm; scorers are loaded once and shared between arms."""
    features = None
    scorers: dict[tuple[str, str, str], Any] = {}

    def scorer(spec: str, stage: str, task: str = ""):
        nonlocal features
        if (spec, stage, task) not in scorers:
            if features is None and spec not in BASELINES:
                features = FeatureStore.from_world(world)
            scorers[spec, stage, task] = load_scorer(spec, world, features, stage, task)
        return scorers[spec, stage, task]

    cascades: dict[tuple, Cascade] = {}
    out = {}
    for name, arm in arms.items():
        key = (arm.coarse, arm.coarse_score, arm.fine, arm.coarse_size)
        if key not in cascades:
            sizes = CascadeSizes(coarse=arm.coarse_size, page=world.config.page_size)
            coarse = scorer(arm.coarse, "coarse", arm.coarse_score)
            cascades[key] = Cascade(coarse, scorer(arm.fine, "fine"), sizes)
        out[name] = cascades[key]
    return out


def versions(arms: Mapping[str, ArmSpec]) -> dict[str, dict[str, Any]]:
    """Per arm: ranker specs and model versions (read from the checkpoints when not loaded; a
    custom factory is built on the arm's world, once per process)."""
    cache: dict[str, str] = {}

    def version(spec: str, stage: str, world: str) -> str:
        if spec in BASELINES:
            return spec
        if spec not in cache:
            if is_custom_spec(spec):
                found = custom_version(spec)  # None: a factory, built to ask its scorer
                if found is None:
                    found = load_custom(spec, *_world_and_features(world)).version
                cache[spec] = found
            else:
                cache[spec] = load_checkpoint(spec, kind=stage).version
        return cache[spec]

    out = {}
    for name, arm in arms.items():
        out[name] = {
            "coarse": arm.coarse,
            "coarse_version": version(arm.coarse, "coarse", arm.world),
            "fine": arm.fine,
            "fine_version": version(arm.fine, "fine", arm.world),
            "coarse_size": arm.coarse_size,
            **({"coarse_score": arm.coarse_score} if arm.coarse_score else {}),
        }
    return out
