"""A ground-truth e-commerce world: recall sets, clicks, purchases, GMV and sessions.

``import simulator`` registers the gymnasium environment ``CascadeSession-v0``.
"""

from gymnasium.envs.registration import register

from simulator.config import SMALL, ConfigError, WorldConfig
from simulator.recall import CHANNELS, RecallSet, SessionKeys
from simulator.session import PageOutcome, SessionBatch, Simulator
from simulator.world import World

register(id="CascadeSession-v0", entry_point="simulator.env:CascadeSessionEnv")

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
