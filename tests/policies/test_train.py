"""Training: configs validate, the teacher beats popularity, distillation stages, caching."""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest
import torch

from common.config import dumps_toml
from policies import metrics
from policies.checkpoint import load_checkpoint
from policies.data import EXPOSED, SampleSpace, iterate_lists, load_logs
from policies.evaluate import held_out_list_ids
from policies.features import FeatureStore, vocab_of
from policies.models import CoarseRanker
from policies.rankers import FineModelScorer
from policies.train import (
    CoarseTask,
    RunConfig,
    ensure_checkpoint,
    ensure_logs,
    ensure_trained,
    parse_config,
    train,
)
from policies.train_cli import main
from simulator.config import SMALL, ConfigError
from simulator.logs import write_logs
from simulator.world import World, fine_signal


def _held_out_exposures(data, users):
    """(user, click label, item id) of every held-out exposed sample."""
    u, y, item = [], [], []
    for batch in iterate_lists(data, SampleSpace(False, False, False), 512, False, None, users=users):
        exposed = batch.mask & (batch.sample_type == EXPOSED)
        u.append(batch.user.user_id[:, None].expand_as(exposed)[exposed])
        y.append(batch.click[exposed])
        item.append(batch.items.item_id[exposed])
    return (torch.cat(x).numpy() for x in (u, y, item))


def test_trained_fine_ranker_beats_popularity_on_held_out_gauc(small_fine, small_data, small_world):
    users, clicks, items = _held_out_exposures(small_data, small_fine.held_out_users)
    assert len(np.intersect1d(users, small_fine.train_users)) == 0
    scores = []
    for batch in iterate_lists(
        small_data, SampleSpace(False, False, False), 512, False, None, users=small_fine.held_out_users
    ):
        with torch.no_grad():
            out = small_fine.model(batch.user, batch.items).click_logit
        scores.append(out[batch.mask & (batch.sample_type == EXPOSED)])
    model_gauc = metrics.gauc(users, clicks, torch.cat(scores).numpy())
    popularity_gauc = metrics.gauc(users, clicks, small_world.item_popularity[items])
    assert model_gauc > popularity_gauc + 0.02, (model_gauc, popularity_gauc)


def test_distilled_coarse_model_trains_and_logs_every_metric(small_coarse):
    assert [r["stage"] for r in small_coarse.history] == [1, 2]
    for record in small_coarse.history:
        for key in ("auc", "gauc", "ndcg@10", "kendall_tau", "recall@10@30"):
            assert np.isfinite(record[key]), key
    meta = load_checkpoint(small_coarse.path).metadata
    assert meta["teacher_version"] is not None and meta["history"] == small_coarse.history


def _run(tmp_path, **tables) -> RunConfig:
    return parse_config({"kind": "coarse", "out": str(tmp_path / "c.pt"), **tables})


def test_stage_one_ignores_hard_labels(small_data, tmp_path):
    run = _run(tmp_path, distill={"teacher": "x.pt"})
    batch = next(iterate_lists(small_data, run.data.space, 16, False, None))
    model = CoarseRanker(run.model, _vocab())
    g = torch.Generator().manual_seed(0)
    soft = (torch.rand(batch.mask.shape, generator=g), torch.rand(batch.mask.shape, generator=g) * 0.1)
    flipped = dataclasses.replace(batch, click=1 - batch.click, exposure=1 - batch.exposure)
    task = CoarseTask(run, small_data.lists(run.data.space))
    assert torch.equal(task.batch_loss(model, batch, soft, 1), task.batch_loss(model, flipped, soft, 1))
    assert not torch.equal(task.batch_loss(model, batch, soft, 2), task.batch_loss(model, flipped, soft, 2))


def _vocab():
    return vocab_of(SMALL)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "coarse"}, "out"),
        ({"kind": "medium", "out": "x"}, r"^kind: must be \"fine\" or \"coarse\""),
        ({"kind": "coarse", "out": "x", "extra": 1}, r"^extra: unknown key"),
        ({"kind": "coarse", "out": "x", "train": {"lr": 0}}, r"^\[train\] lr: must be > 0"),
        ({"kind": "coarse", "out": "x", "train": {"loss": "hinge"}}, r"\[train\] loss: must be one of"),
        (
            {"kind": "coarse", "out": "x", "train": {"score_task": "gmv"}},
            r"score_task: must .*a ranker setting",
        ),
        ({"kind": "coarse", "out": "x", "train": {"score_task": "margin"}}, r"score_task: must be one of"),
        (
            {"kind": "coarse", "out": "x", "train": {"epoch": 2}},
            r"^\[train\] epoch: unknown key; did you mean 'epochs'",
        ),
        ({"kind": "coarse", "out": "x", "model": {"nova": "yes"}}, r"^\[model\] nova: must be true or false"),
        ({"kind": "coarse", "out": "x", "distill": {"label_smoothing_scale": 2}}, r"must be >= 0 and <= 1"),
        (
            {"kind": "fine", "out": "x", "distill": {"teacher": "t.pt"}},
            r"^\[distill\]: applies to coarse models only",
        ),
        ({"kind": "coarse", "out": "x", "data": {"users": 0}}, r"^\[data\] users: must be >= 1"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_config_round_trips_through_plain_dicts(tmp_path):
    run = _run(tmp_path, model={"nova": True, "similarity": "cosine"}, train={"loss": "bce"})
    assert parse_config(run.to_dict()) == run


def test_ensure_trained_simulates_logs_then_reuses_a_checkpoint_of_the_same_config(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'kind = "coarse"\nout = "{tmp_path / "c.pt"}"\n'
        f'[data]\nlogs = "{tmp_path / "logs"}"\nworld = "small"\nusers = 100\n'
        "[model]\ndim = 8\n[train]\nepochs = 1\neval_lists = 0\n"
    )
    first = ensure_trained(config, progress=False, log=lambda *_: None)
    assert (tmp_path / "logs" / "samples.parquet").is_file()
    stamp = first.stat().st_mtime_ns
    assert ensure_trained(config, progress=False, log=lambda *_: None) == first
    assert first.stat().st_mtime_ns == stamp  # not retrained
    config.write_text(config.read_text().replace("dim = 8", "dim = 4"))
    ensure_trained(config, progress=False, log=lambda *_: None)
    assert load_checkpoint(first).model.config.dim == 4


def test_ensure_trained_does_not_reuse_a_checkpoint_of_an_edited_world_file(tmp_path):
    world = tmp_path / "world.toml"
    sizes = "n_items = 5000\nn_users = 2000\nn_categories = 20\nbrands_per_category = 10\n"
    sizes += "recall_size = 500\nlogging_coarse_size = 100\ni2i_neighbors = 30\n"
    world.write_text(f"[world]\n{sizes}click_intercept = -4.0\n")
    config = tmp_path / "c.toml"
    config.write_text(
        f'kind = "coarse"\nout = "{tmp_path / "c.pt"}"\n'
        f'[data]\nlogs = "{tmp_path / "logs"}"\nworld = "{world}"\nusers = 100\n'
        "[model]\ndim = 4\n[train]\nepochs = 1\neval_lists = 0\n"
    )
    first = ensure_trained(config, progress=False, log=lambda *_: None)
    assert load_checkpoint(first).metadata["world"]["click_intercept"] == -4.0
    world.write_text(f"[world]\n{sizes}click_intercept = -5.0\n")  # same path, another world
    with pytest.raises(ConfigError, match="not simulated from world"):  # stale logs, not a stale model
        ensure_trained(config, progress=False, log=lambda *_: None)
    shutil.rmtree(tmp_path / "logs")
    ensure_trained(config, progress=False, log=lambda *_: None)
    assert load_checkpoint(first).metadata["world"]["click_intercept"] == -5.0


def test_ensure_trained_retrains_a_student_whose_teacher_config_was_edited(tmp_path, small_log_dir):
    quiet = {"progress": False, "log": lambda *_: None}
    data = f'[data]\nlogs = "{small_log_dir}"\nworld = "small"\n'
    teacher = tmp_path / "fine.toml"
    teacher.write_text(
        f'kind = "fine"\nout = "{tmp_path / "f.pt"}"\n{data}[model]\ndim = 4\n[train]\nepochs = 1\n'
    )
    student = tmp_path / "c.toml"
    student.write_text(
        f'kind = "coarse"\nout = "{tmp_path / "c.pt"}"\n{data}'
        '[model]\ndim = 4\n[train]\nepochs = 2\neval_lists = 0\n[distill]\nteacher = "fine.toml"\n'
    )
    first = ensure_trained(student, **quiet)  # trains the teacher, then the student
    stamp = first.stat().st_mtime_ns
    assert ensure_trained(student, **quiet) == first and first.stat().st_mtime_ns == stamp  # reused
    teacher.write_text(teacher.read_text().replace("dim = 4", "dim = 6"))  # another teacher
    ensure_trained(student, **quiet)
    retrained_teacher = load_checkpoint(tmp_path / "f.pt", kind="fine")
    assert retrained_teacher.model.config.dim == 6
    assert load_checkpoint(first).metadata["teacher_version"] == retrained_teacher.version
    assert first.stat().st_mtime_ns != stamp


def test_ensure_checkpoint_resolves_every_kind_of_model_spec(tmp_path, small_log_dir):
    quiet = {"progress": False, "log": lambda *_: None}
    inline = {"out": str(tmp_path / "c.pt"), "data": {"logs": str(small_log_dir), "world": "small"}}
    inline |= {"model": {"dim": 4}, "train": {"epochs": 1, "eval_lists": 0}}
    trained = ensure_checkpoint(inline, "coarse", **quiet)  # an inline config: trained
    assert trained == str((tmp_path / "c.pt").resolve()) and load_checkpoint(trained, kind="coarse")
    assert ensure_checkpoint(str(tmp_path / "c.pt"), "coarse", **quiet) == trained  # a checkpoint
    config = tmp_path / "c.toml"
    config.write_text(
        f'kind = "coarse"\nout = "{tmp_path / "c.pt"}"\n[data]\nlogs = "{small_log_dir}"\nworld = "small"\n'
        "[model]\ndim = 4\n[train]\nepochs = 1\neval_lists = 0\n"
    )
    stamp = (tmp_path / "c.pt").stat().st_mtime_ns
    assert ensure_checkpoint(str(config), "coarse", **quiet) == trained  # the same config: reused
    assert (tmp_path / "c.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"training config .*missing\.toml does not exist"):
        ensure_checkpoint(str(tmp_path / "missing.toml"), "coarse", **quiet)
    with pytest.raises(ConfigError, match=r"checkpoint .*missing\.pt does not exist"):
        ensure_checkpoint(str(tmp_path / "missing.pt"), "coarse", **quiet)


def test_ensure_trained_refuses_logs_of_another_world(tmp_path, small_log_dir):
    run = parse_config(
        {
            "kind": "fine",
            "out": str(tmp_path / "f.pt"),
            "data": {"logs": str(small_log_dir), "world": "default"},
        }
    )
    with pytest.raises(ConfigError, match="not simulated from world 'default'"):
        ensure_trained(run, progress=False)


def test_ensure_logs_refuses_a_folder_of_fewer_users_than_configured(tmp_path, small_world):
    logs = write_logs(small_world, tmp_path / "logs", n_users=50, progress=False)  # e.g. a pre-period's
    data = parse_config(
        {"kind": "coarse", "out": "x.pt", "data": {"logs": str(logs), "world": "small", "users": 50}}
    )
    assert ensure_logs(data.data, progress=False) == logs
    with pytest.raises(ConfigError, match=r"hold 50 users, \[data\] users = 2,000; delete them"):
        ensure_logs(dataclasses.replace(data.data, users=2_000), progress=False)


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "coarse"\nout = "x.pt"\n[train]\nepochs = -1\n')
    assert main(["--config", str(bad)]) == 2
    assert "bad.toml [train] epochs: must be >= 1, got -1" in capsys.readouterr().err


def test_cli_checks_every_named_config_before_writing_anything(tmp_path, capsys):
    (tmp_path / "fine.toml").write_text('kind = "fine"\nout = "f.pt"\n[model]\nhidden = = 1\ndim = 2\n')
    config = tmp_path / "c.toml"
    config.write_text(
        'kind = "coarse"\nout = "c.pt"\n[data]\nlogs = "logs"\n[distill]\nteacher = "fine.toml"\n'
    )
    assert main(["--config", str(config)]) == 2
    assert re.search(r"fine\.toml: is not valid TOML: .*line 4", capsys.readouterr().err)
    assert main(["--config", str(config), "--set", "train.lr=fast"]) == 2
    assert "c.toml [train] lr: must be a number, got 'fast'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "fine.toml"]  # no logs, no checkpoint


_TINY_MODEL = {"fine": {"dim": 4, "attention_hidden": 4, "hidden": [8]}, "coarse": {"dim": 4}}


def _tiny(small_log_dir, small_data, path, kind: str, seed: int, records: list | None = None):
    raw = {
        "kind": kind,
        "out": str(path),
        "data": {"logs": str(small_log_dir), "world": "small", "held_out_share": 0.9},
        "model": _TINY_MODEL[kind],
        "train": {"epochs": 1, "batch_size": 1024, "eval_lists": 300, "seed": seed},
    }
    on_epoch = records.append if records is not None else None
    return train(parse_config(raw), small_data, progress=False, log=lambda *_: None, on_epoch=on_epoch)


@pytest.mark.parametrize("kind", ["fine", "coarse"])
def test_one_loop_trains_each_kind_reproducibly_without_the_global_generator(
    kind, small_log_dir, small_data, tmp_path
):
    state = torch.get_rng_state()
    records: list[dict] = []
    first = _tiny(small_log_dir, small_data, tmp_path / "a.pt", kind, seed=0, records=records)
    assert torch.equal(torch.get_rng_state(), state)  # training neither draws from nor seeds it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)  # whatever the global state, the weights are those of the seed
        again = _tiny(small_log_dir, small_data, tmp_path / "b.pt", kind, seed=0)
    other = _tiny(small_log_dir, small_data, tmp_path / "c.pt", kind, seed=1)
    assert load_checkpoint(first.path, kind=kind).version == first.version
    assert again.version == first.version and again.history == first.history
    assert other.version != first.version
    assert records == first.history and {"auc", "gauc", "loss"} <= set(records[0])
    assert load_checkpoint(first.path).metadata["score_task"] == "click"


def _split_run(log_dir, path, split: str | None, kind: str = "coarse"):
    data = {"logs": str(log_dir), "world": "small", **({"split": split} if split else {})}
    train_table = {"epochs": 1, "batch_size": 256, "eval_lists": 400, "seed": 0}
    raw = {"kind": kind, "out": str(path), "data": data, "model": _TINY_MODEL[kind], "train": train_table}
    return parse_config(raw)


def test_the_time_split_trains_before_the_last_day_and_evaluates_on_it(
    two_day_log_dir, tmp_path, monkeypatch
):
    import policies.train as training  # noqa: PLC0415 (its batch maker is watched)

    data = load_logs(two_day_log_dir)
    run = _split_run(two_day_log_dir, tmp_path / "day.pt", "day")
    trained_days, made = [], training.make_batch

    def watched(data_, lists, ids):
        trained_days.append(lists.day[np.asarray(ids)])
        return made(data_, lists, ids)

    monkeypatch.setattr(training, "make_batch", watched)  # the training batches, not the evaluation
    lines: list[str] = []
    result = train(run, data, progress=False, log=lines.append)
    day, user = data.samples["day"].to_numpy(), data.samples["user_id"].to_numpy()
    assert result.eval_day == day.max() == 1
    assert np.unique(np.concatenate(trained_days)).tolist() == [0]  # never a list of the last day
    np.testing.assert_array_equal(result.train_users, np.unique(user[day == 0]))  # every earlier user
    np.testing.assert_array_equal(result.held_out_users, np.unique(user[day == 1]))
    assert any("offline metrics on day 1" in line for line in lines)
    assert {"auc", "gauc"} <= set(result.history[0])
    meta = load_checkpoint(result.path).metadata
    assert (meta["split"], meta["eval_day"], meta["run"]["data"]["split"]) == ("day", 1, "day")
    # the offline metrics are those of the last day's lists of the evaluated users
    lists = data.lists(CoarseTask.of(run, data, False, print).space)
    ids = held_out_list_ids(lists, result.held_out_users, 400, day=1)
    assert len(ids) and (lists.day[ids] == 1).all()


def test_a_time_split_of_one_day_of_logs_fails_clearly(small_log_dir, small_data, tmp_path):
    with pytest.raises(ValueError, match=r'split = "day" needs logs of at least 2 days'):
        train(_split_run(small_log_dir, tmp_path / "x.pt", "day"), small_data, progress=False, log=print)


def test_the_user_split_is_unchanged_by_the_split_setting(two_day_log_dir, tmp_path):
    data = load_logs(two_day_log_dir)
    default = _split_run(two_day_log_dir, tmp_path / "default.pt", None)
    explicit = _split_run(two_day_log_dir, tmp_path / "user.pt", "user")
    # a checkpoint of a config from before the setting is reused: the default is left out
    assert "split" not in default.to_dict()["data"]
    assert default.to_dict() == dataclasses.replace(explicit, out=default.out).to_dict()
    assert default.portable() == dataclasses.replace(explicit, out=default.out).portable()
    a = train(default, data, progress=False, log=lambda *_: None)
    b = train(explicit, data, progress=False, log=lambda *_: None)
    assert a.version == b.version and a.history == b.history and a.eval_day is None
    assert "split" not in load_checkpoint(a.path).metadata
    day = train(
        _split_run(two_day_log_dir, tmp_path / "day.pt", "day"), data, progress=False, log=lambda *_: None
    )
    assert day.version != a.version  # the setting does change what trains


def test_a_fine_ranker_cannot_serve_the_exposure_task(small_log_dir, small_data, tmp_path):
    raw = {"kind": "fine", "out": str(tmp_path / "f.pt"), "train": {"score_task": "exposure"}}
    with pytest.raises(ConfigError, match="score_task of a fine ranker must be one of"):
        train(parse_config(raw), small_data, progress=False, log=lambda *_: None)


def _validated_run(log_dir, path, epochs: int, validation_share: float) -> RunConfig:
    data = {"logs": str(log_dir), "world": "small", "validation_share": validation_share}
    train_table = {"epochs": epochs, "batch_size": 256, "eval_lists": 300, "seed": 0, "lr": 0.03}  # overfits
    return parse_config(
        {"kind": "coarse", "out": str(path), "data": data, "model": {"dim": 4}, "train": train_table}
    )


def test_validation_users_choose_the_epoch_and_never_train(small_log_dir, small_data, tmp_path, monkeypatch):
    import policies.train as training  # noqa: PLC0415 (its batch maker is watched)
    from abtest.segments import checkpoint_training_users  # noqa: PLC0415

    trained_users, made = [], training.make_batch

    def watched(data_, lists, ids):
        if torch.is_grad_enabled():  # a training batch, not the validation loss (no_grad)
            trained_users.append(lists.user_id[np.asarray(ids)])
        return made(data_, lists, ids)

    monkeypatch.setattr(training, "make_batch", watched)
    lines: list[str] = []
    result = train(
        _validated_run(small_log_dir, tmp_path / "v4.pt", 4, 0.3),
        small_data,
        progress=False,
        log=lines.append,
    )
    monkeypatch.undo()
    plain = train(
        _validated_run(small_log_dir, tmp_path / "p.pt", 1, 0.0), small_data, progress=False, log=print
    )
    # the held-out users are the same; the validation users are training users that did not train
    np.testing.assert_array_equal(result.held_out_users, plain.held_out_users)
    np.testing.assert_array_equal(np.union1d(result.train_users, result.validation_users), plain.train_users)
    assert 0.2 < len(result.validation_users) / len(plain.train_users) < 0.4
    assert not np.isin(np.concatenate(trained_users), result.validation_users).any()
    assert np.isin(result.train_users, np.concatenate(trained_users)).all()
    # the checkpoint holds the epoch of the lowest validation loss: here not the last one
    losses = [record["val_loss"] for record in result.history]
    assert result.selected_epoch == int(np.argmin(losses)) + 1 < 4, losses
    assert any(f"kept epoch {result.selected_epoch} of 4" in line for line in lines)
    shorter = train(
        _validated_run(small_log_dir, tmp_path / "short.pt", result.selected_epoch, 0.3),
        small_data,
        False,
        print,
    )
    for name, weights in load_checkpoint(result.path).model.state_dict().items():
        assert torch.equal(weights, shorter.model.state_dict()[name]), name
    meta = load_checkpoint(result.path).metadata
    assert (meta["selected_epoch"], meta["validation_share"]) == (result.selected_epoch, 0.3)
    # warm users (abtest.segments) are the users that trained, not those that validated
    np.testing.assert_array_equal(checkpoint_training_users(result.path), result.train_users)
    # without validation nothing changes: the setting is left out of the stored config
    plain_meta = load_checkpoint(plain.path).metadata
    assert "validation_share" not in plain_meta["run"]["data"] and "selected_epoch" not in plain_meta
    assert plain.selected_epoch == 1 and len(plain.validation_users) == 0


@pytest.fixture(scope="module")
def signal_logs(tmp_path_factory):
    """One day of logs of every user of the SMALL world with a fine-only pair signal."""
    folder = tmp_path_factory.mktemp("fine-signal")
    world = SMALL.replace(fine_signal_std=1.5)
    (folder / "world.toml").write_text(dumps_toml({"world": world.to_dict()}))
    return folder, write_logs(World(world), folder / "logs", progress=False)


def _fine_gauc(folder, logs, reads_signal: bool):
    raw = {
        "kind": "fine",
        "out": str(folder / f"fine-{reads_signal}.pt"),
        "data": {"logs": str(logs), "world": str(folder / "world.toml")},
        "model": {"fine_signal": reads_signal},
        "train": {"epochs": 3, "eval_lists": 0},
    }
    data = load_logs(logs)
    result = train(parse_config(raw), data, progress=False, log=lambda *_: None)
    users, clicks, scores = [], [], []
    for batch in iterate_lists(
        data, SampleSpace(False, False, False), 512, False, None, users=result.held_out_users
    ):
        with torch.no_grad():
            out = result.model(batch.user, batch.items, batch.fine_signal).click_logit
        exposed = batch.mask & (batch.sample_type == EXPOSED)
        users.append(batch.user.user_id[:, None].expand_as(exposed)[exposed])
        clicks.append(batch.click[exposed])
        scores.append(out[exposed])
    return metrics.gauc(*(torch.cat(x).numpy() for x in (users, clicks, scores))), result, data


def test_a_fine_ranker_reading_the_fine_signal_learns_what_the_others_cannot(signal_logs):
    folder, logs = signal_logs
    with_signal, result, data = _fine_gauc(folder, logs, True)
    without, _, _ = _fine_gauc(folder, logs, False)
    # the signal alone ranks the held-out exposures at GAUC ~0.72; reading it is worth far more
    # than the run-to-run spread of a small model's GAUC (~0.01)
    assert with_signal > without + 0.03, (with_signal, without)
    # training reads the feature the world keys by (seed, user, item); serving computes the same
    batch = next(iterate_lists(data, SampleSpace(), 64, False, None))
    world = World(SMALL.replace(fine_signal_std=1.5))
    expected = fine_signal(world.config.seed, batch.user.user_id.numpy(), batch.items.item_id.numpy())
    np.testing.assert_array_equal(batch.fine_signal.numpy(), expected)
    features = FeatureStore.from_world(world)
    scorer = FineModelScorer(result.model, features)
    user, items = batch.user.user_id[:2].numpy(), batch.items.item_id[:2, :5].numpy()
    with torch.no_grad():
        direct = result.model(
            features.users(user), features.item_features(items), batch.fine_signal[:2, :5]
        ).pctr
    np.testing.assert_allclose(scorer.score(user, items), direct.numpy(), rtol=1e-5)


def test_a_fine_ranker_reading_the_fine_signal_fails_clearly_on_a_world_without_it(
    small_data, small_log_dir, tmp_path
):
    raw = {
        "kind": "fine",
        "out": str(tmp_path / "fine.pt"),
        "data": {"logs": str(small_log_dir), "world": "small"},
        "model": {"dim": 8, "hidden": [8], "fine_signal": True},
        "train": {"epochs": 1, "eval_lists": 0},
    }
    assert next(iterate_lists(small_data, SampleSpace(), 8, False, None)).fine_signal is None
    with pytest.raises(ValueError, match="fine_signal_std > 0"):
        train(parse_config(raw), small_data, progress=False, log=lambda *_: None)
