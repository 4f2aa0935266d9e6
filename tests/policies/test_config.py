"""Training configs: strictly typed tables, the model table of the config's kind, paths relative
to the file, the plain-dict round trip, and model specs checked without training."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, dumps_toml
from policies.config import RunConfig, check_model_spec, load_config, parse_config
from policies.models import CoarseConfig, FineConfig


def test_the_model_table_is_read_as_the_model_of_the_kind():
    fine = parse_config({"kind": "fine", "out": "/f.pt", "model": {"hidden": [8]}})
    coarse = parse_config({"kind": "coarse", "out": "/c.pt", "model": {"dim": 8}})
    assert fine.model == FineConfig(hidden=(8,)) and coarse.model == CoarseConfig(dim=8)
    with pytest.raises(ConfigError, match=r"^\[model\] hidden: unknown key"):
        parse_config({"kind": "coarse", "out": "/c.pt", "model": {"hidden": [8]}})
    with pytest.raises(ConfigError, match=r"^\[model\]: is not a coarse model config"):
        RunConfig("coarse", "/c.pt", coarse.data, FineConfig(), coarse.train, coarse.distill)


def test_a_training_config_round_trips_through_toml(tmp_path):
    run = parse_config(
        {"kind": "coarse", "out": "/c.pt", "model": {"nova": True}, "distill": {"teacher": "/f.pt"}}
    )
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(run))
    assert load_config(path) == run


def test_paths_are_relative_to_the_training_config(tmp_path):
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "c.toml"
    path.write_text(
        'kind = "coarse"\nout = "../runs/c.pt"\n[data]\nlogs = "../logs"\nworld = "small"\n'
        '[distill]\nteacher = "f.toml"\n'
    )
    run = load_config(path)
    assert (run.out, run.data.logs) == (str(tmp_path / "runs" / "c.pt"), str(tmp_path / "logs"))
    assert run.distill.teacher == str(tmp_path / "models" / "f.toml") and run.data.world == "small"


def test_the_portable_form_is_the_same_wherever_the_checkout_lies(tmp_path):
    def run_in(root: Path, seed: int = 0) -> RunConfig:
        (root / "models").mkdir(parents=True, exist_ok=True)
        path = root / "models" / "c.toml"
        path.write_text(
            'kind = "coarse"\nout = "../runs/c.pt"\n[data]\nlogs = "../logs"\nworld = "small"\n'
            f'[distill]\nteacher = "f.toml"\n[train]\nseed = {seed}\n'
        )
        return load_config(path)

    here, there = run_in(tmp_path / "a"), run_in(tmp_path / "b" / "deeper")
    assert here.to_dict() != there.to_dict()  # absolute paths
    assert here.portable() == there.portable()
    assert here.portable()["data"]["logs"] == "../logs"
    assert here.portable()["distill"]["teacher"] == "../models/f.toml"
    assert run_in(tmp_path / "a", seed=1).portable() != here.portable()


def test_model_specs_are_checked_down_to_the_teacher_without_training(tmp_path):
    (tmp_path / "f.toml").write_text('kind = "fine"\nout = "f.pt"\n[train]\nepochs = = 2\n')
    (tmp_path / "c.toml").write_text('kind = "coarse"\nout = "c.pt"\n[distill]\nteacher = "f.toml"\n')
    with pytest.raises(ConfigError, match=r"f\.toml: is not valid TOML: .*line 4"):
        check_model_spec(str(tmp_path / "c.toml"), "coarse")
    with pytest.raises(ConfigError, match=r"^\[data\] users: must be an integer"):
        check_model_spec({"out": "x.pt", "data": {"users": "many"}}, "fine")
    check_model_spec("random", "coarse")  # a baseline names no config
    check_model_spec(str(tmp_path / "model.pt"), "coarse")  # nor does a checkpoint
    assert not list(Path(tmp_path).glob("*.pt"))
