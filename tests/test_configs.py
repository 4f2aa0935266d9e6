"""Shipped config files load and mean what they say."""

from pathlib import Path

from simulator.config import WorldConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_world_toml_lists_every_setting_at_its_default():
    text = (CONFIGS / "world.toml").read_text()
    assert WorldConfig.from_toml(CONFIGS / "world.toml") == WorldConfig()
    for name in WorldConfig().to_dict():
        assert f"\n{name} = " in text, f"{name} is not documented in configs/world.toml"
