"""A ground-truth e-commerce world: recall sets, clicks, purchases, GMV and sessions.

``import simulator`` registers the gymnasium environment ``CascadeSession-v0`` with its native
vector form: ``gymnasium.make_vec("CascadeSession-v0", num_envs=N,
vectorization_mode="vector_entry_point")`` is one ``CascadeSessionVectorEnv`` whose N sessions
share one world (the ``"sync"`` mode would build a world per sub-environment).
"""

from gymnasium.envs.registration import register

from simulator.config import SMALL, ConfigError, WorldConfig
from simulator.recall import CHANNELS, RecallSet, SessionKeys
from simulator.session import PageOutcome, SessionBatch, Simulator
from simulator.world import World

register(
    id="CascadeSession-v0",
    entry_point="simulator.env:CascadeSessionEnv",
    vector_entry_point="simulator.env:CascadeSessionVectorEnv",
)

__all__ = [
    "CHANNELS",
    "SMALL",
    "ConfigError",
    "PageOutcome",
    "RecallSet",
    "SessionBatch",
    "SessionKeys",
    "Simulator",
    "World",
    "WorldConfig",
]
