"""WorldConfig: bad values fail at construction, with a message naming the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from simulator import SMALL, ConfigError, WorldConfig

SIZE_FIELDS = [
    "n_items",
    "n_users",
    "n_categories",
    "brands_per_category",
    "dim",
    "history_len",
    "page_size",
    "max_pages",
    "recall_size",
    "i2i_neighbors",
    "logging_coarse_size",
]


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_size_is_rejected_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field):
        SMALL.replace(**{field: value})


@pytest.mark.parametrize("field", ["sample_unexposed", "sample_dropped", "sample_random"])
def test_negative_sample_count_is_rejected_naming_the_field(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SMALL.replace(**{field: -1})


@pytest.mark.parametrize("field", ["taste_scale", "position_decay", "out_of_scene_rate", "seq_gamma"])
def test_negative_scale_is_rejected_naming_the_field(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SMALL.replace(**{field: -0.1})


def test_recall_size_above_pool_is_rejected() -> None:
    with pytest.raises(ConfigError, match="recall_size"):
        SMALL.replace(recall_size=SMALL.n_items + 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("history_noise", 1.5),
        ("new_item_share", -0.1),
        ("popularity_quality_corr", 1.01),
        ("recall_share_new", -0.01),
    ],
)
def test_probability_out_of_unit_interval_is_rejected(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        SMALL.replace(**{field: value})


def test_recall_shares_not_summing_to_one_are_rejected() -> None:
    with pytest.raises(ConfigError, match="recall_share"):
        SMALL.replace(recall_share_i2i=0.4)  # 0.4 + 0.35 + 0.2 + 0.1 = 1.05


def test_stage_sizes_must_shrink_down_the_cascade() -> None:
    with pytest.raises(ConfigError, match="logging_coarse_size"):
        SMALL.replace(logging_coarse_size=SMALL.recall_size + 1)


def test_replace_validates_and_leaves_the_original_unchanged() -> None:
    with pytest.raises(ConfigError):
        SMALL.replace(n_items=-5)
    changed = SMALL.replace(seed=7)
    assert (changed.seed, SMALL.seed) == (7, 0)
    assert dataclasses.replace(changed, seed=SMALL.seed) == SMALL


def test_from_dict_rejects_unknown_keys_naming_them() -> None:
    values = SMALL.to_dict() | {"n_itemz": 10}
    with pytest.raises(ConfigError, match="n_itemz"):
        WorldConfig.from_dict(values)


def test_from_dict_round_trips_to_dict() -> None:
    assert WorldConfig.from_dict(SMALL.to_dict()) == SMALL


def _toml_line(name: str, value: object) -> str:
    return f"{name} = {str(value).lower() if isinstance(value, bool) else value!r}"


def test_from_toml_reads_the_world_table(tmp_path: Path) -> None:
    lines = ["title = 'ignored: not in [world]'", "[world]"]
    lines += [_toml_line(k, v) for k, v in SMALL.replace(seed=11, history_noise=0.3).to_dict().items()]
    lines += ["[other]", "n_items = 3"]
    path = tmp_path / "world.toml"
    path.write_text("\n".join(lines) + "\n")
    assert WorldConfig.from_toml(path) == SMALL.replace(seed=11, history_noise=0.3)


def test_from_toml_with_partial_table_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "world.toml"
    path.write_text("[world]\nseed = 3\nposition_decay = 0.8\n")
    assert WorldConfig.from_toml(path) == WorldConfig(seed=3, position_decay=0.8)


def test_from_toml_rejects_unknown_keys_in_the_world_table(tmp_path: Path) -> None:
    path = tmp_path / "world.toml"
    path.write_text("[world]\nseed = 3\nclick_intercpt = -4.0\n")
    with pytest.raises(ConfigError, match="click_intercpt"):
        WorldConfig.from_toml(path)


def test_from_toml_validates_values(tmp_path: Path) -> None:
    path = tmp_path / "world.toml"
    path.write_text("[world]\nhistory_noise = 1.5\n")
    with pytest.raises(ConfigError, match="history_noise"):
        WorldConfig.from_toml(path)


def test_from_toml_without_a_world_table_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "world.toml"
    path.write_text("n_items = 3000\nseed = 5\n")
    with pytest.raises(ConfigError, match="world"):
        WorldConfig.from_toml(path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n_items": True}, r"^n_items: must be an integer, got True$"),
        ({"n_items": 5000.0}, r"^n_items: must be an integer, got 5000\.0$"),
        ({"taste_scale": "0.8"}, r"^taste_scale: must be a number, got '0\.8'$"),
        ({"n_itemz": 5}, r"^n_itemz: unknown key; did you mean 'n_items'\?$"),
    ],
)
def test_from_dict_is_strictly_typed(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorldConfig.from_dict(values)


def test_from_toml_names_the_file_table_and_key(tmp_path: Path) -> None:
    path = tmp_path / "world.toml"
    path.write_text("[world]\nseq_window = -1\n")
    with pytest.raises(ConfigError, match=rf"^{path} \[world\] seq_window: must be >= 1, got -1$"):
        WorldConfig.from_toml(path)
    path.write_text("[world\nseed = 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: is not valid TOML: .*line 1"):
        WorldConfig.from_toml(path)
