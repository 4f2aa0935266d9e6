"""Gymnasium environments: the env contract, determinism, autoreset, agreement of both forms."""

from __future__ import annotations

import itertools
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import simulator
from simulator import SMALL, World
from simulator.env import CascadeSessionEnv, CascadeSessionVectorEnv

K = SMALL.page_size


def first_unshown(obs: dict) -> np.ndarray:
    """A deterministic policy of the observation: the first K candidates not yet shown."""
    return np.flatnonzero(obs["shown"] == 0)[:K]


@pytest.fixture(scope="module")
def short_world() -> World:
    """Sessions that often run to max_pages (truncation) and sometimes leave (termination)."""
    return World(SMALL.replace(max_pages=4, continue_intercept=2.0))


def test_check_env_passes(small_world: World) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any other complaint of the checker fails the test
        # expected: the env is built directly (no spec), so render modes cannot be probed
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")
        check_env(CascadeSessionEnv(world=small_world))


def test_gymnasium_make_builds_the_registered_env() -> None:
    env = gym.make("CascadeSession-v0", config=SMALL)
    assert isinstance(env.unwrapped, CascadeSessionEnv)
    assert env.unwrapped.world.config == SMALL
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, *_ = env.step(first_unshown(obs))
    assert obs["page"] == 1 and reward >= 0


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1))
def test_observations_lie_in_the_observation_space(small_world: World, seed: int) -> None:
    env = CascadeSessionEnv(world=small_world)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        done = terminated or truncated


def _episode(env: CascadeSessionEnv, seed: int, options: dict | None = None) -> list:
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed, options=options)
    steps, done = [obs], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps.append((obs, reward, terminated, truncated, info))
        done = terminated or truncated
    return steps


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 2**32 - 1))
def test_same_reset_seed_gives_the_same_episode(small_world: World, seed: int) -> None:
    first = _episode(CascadeSessionEnv(world=small_world), seed)
    _assert_same(_episode(CascadeSessionEnv(world=small_world), seed), first)


def test_different_reset_seeds_give_different_sessions(small_world: World) -> None:
    env = CascadeSessionEnv(world=small_world)
    candidates = {tuple(env.reset(seed=s)[0]["candidates"][:20]) for s in range(10)}
    assert len(candidates) == 10


def test_reset_options_pin_the_session(small_world: World) -> None:
    env = CascadeSessionEnv(world=small_world)
    options = {"user_id": 42, "day": 1, "session": 7}
    first = _episode(env, 0, options)
    assert first[0]["user_id"] == 42
    _assert_same(_episode(env, 123, options)[0], first[0])  # the reset seed no longer matters


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**32 - 1))
def test_an_episode_ends_within_max_pages(short_world: World, seed: int) -> None:
    env = CascadeSessionEnv(world=short_world)
    steps = _episode(env, seed)[1:]
    max_pages = short_world.config.max_pages
    assert 1 <= len(steps) <= max_pages
    *_, (obs, _, terminated, truncated, _) = steps
    assert terminated != truncated
    assert truncated == (len(steps) == max_pages and not terminated)
    assert obs["page"] == len(steps)
    with pytest.raises(RuntimeError):
        env.step(env.action_space.sample())


@pytest.mark.parametrize("reward", ["clicks", "purchases", "gmv"])
def test_reward_is_the_named_page_outcome(small_world: World, reward: str) -> None:
    env = CascadeSessionEnv(world=small_world, reward=reward)
    total, outcome = 0.0, 0.0
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, r, terminated, truncated, info = env.step(first_unshown(obs))
            total += r
            outcome += float(info[reward])
            done = terminated or truncated
    assert total == pytest.approx(outcome) and total > 0


# ---------------------------------------------------------------- vector env
def _run_vector(world: World, num_envs: int, seed: int, n_steps: int) -> list:
    env = CascadeSessionVectorEnv(num_envs, world=world)
    obs, _ = env.reset(seed=seed)
    log = [(obs, None, None, None, None, env._batch.keys.session.copy())]  # session ids are not observed
    for _ in range(n_steps):
        actions = np.stack([first_unshown({"shown": s}) for s in obs["shown"]])
        obs, reward, terminated, truncated, info = env.step(actions)
        log.append((obs, reward, terminated, truncated, info, env._batch.keys.session.copy()))
    return log


@pytest.fixture(scope="module")
def vector_log(short_world: World) -> list:
    return _run_vector(short_world, 6, seed=3, n_steps=25)


def test_vector_observations_lie_in_the_observation_space(short_world: World, vector_log: list) -> None:
    space = CascadeSessionVectorEnv(6, world=short_world).observation_space
    for obs, *_ in vector_log:
        assert space.contains(obs)


def test_vector_env_autoresets_the_step_after_an_episode_ends(vector_log: list) -> None:
    ended = 0
    for before, after in itertools.pairwise(vector_log[1:]):
        _, _, terminated, truncated, _, _ = before
        obs, reward, term2, trunc2, info, _ = after
        for i in np.flatnonzero(terminated | truncated):
            ended += 1
            assert obs["page"][i] == 0 and not obs["shown"][i].any()
            assert reward[i] == 0 and not term2[i] and not trunc2[i]
            assert (info["items"][i] == -1).all()
    assert ended >= 6


def test_vector_env_sessions_equal_single_env_sessions(short_world: World, vector_log: list) -> None:
    """Every complete session of the vector env, replayed in the single env, gives the same steps."""
    single = CascadeSessionEnv(world=short_world)
    checked = 0
    for i in range(6):
        start = 0
        for t in range(1, len(vector_log)):
            _, _, terminated, truncated, _, _ = vector_log[t]
            if not (terminated[i] or truncated[i]):
                continue
            obs0, *_, session = vector_log[start]
            obs, _ = single.reset(options={"user_id": int(obs0["user_id"][i]), "session": int(session[i])})
            np.testing.assert_array_equal(obs["candidates"], obs0["candidates"][i])
            for step in vector_log[start + 1 : t + 1]:
                obs, reward, term, trunc, info = single.step(first_unshown(obs))
                v_obs, v_reward, v_term, v_trunc, v_info, _ = step
                assert (reward, term, trunc) == (v_reward[i], v_term[i], v_trunc[i])
                np.testing.assert_array_equal(info["items"], v_info["items"][i])
                np.testing.assert_array_equal(obs["shown"], v_obs["shown"][i])
            checked += 1
            start = t + 1  # the autoreset step: the next session's first observation
    assert checked >= 6


def test_vector_env_same_seed_gives_the_same_rollout(short_world: World, vector_log: list) -> None:
    _assert_same(_run_vector(short_world, 6, seed=3, n_steps=25), vector_log)


def test_vector_env_rejects_zero_envs(small_world: World) -> None:
    with pytest.raises(ValueError, match="num_envs"):
        CascadeSessionVectorEnv(0, world=small_world)


def test_import_registers_the_env_id() -> None:
    assert simulator is not None and "CascadeSession-v0" in gym.registry


def test_make_vec_builds_the_native_vector_env_on_one_world() -> None:
    env = gym.make_vec("CascadeSession-v0", num_envs=4, vectorization_mode="vector_entry_point", config=SMALL)
    assert isinstance(env.unwrapped, CascadeSessionVectorEnv)
    assert env.num_envs == 4 and env.unwrapped.world.config == SMALL
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def test_vector_infos_carry_gymnasium_masks_false_where_a_session_restarted(vector_log: list) -> None:
    restarted = 0
    for before, after in itertools.pairwise(vector_log[1:]):
        ended = before[2] | before[3]
        info = after[4]
        keys = [k for k in info if not k.startswith("_")]
        assert keys and set(info) == set(keys) | {f"_{k}" for k in keys}
        for key in keys:
            mask = info[f"_{key}"]
            assert mask.dtype == np.bool_ and mask.shape == (6,) and len(info[key]) == 6
            np.testing.assert_array_equal(mask, ~ended)
        restarted += int(ended.sum())
    assert restarted > 0


def test_vector_infos_have_the_layout_of_gymnasiums_own_vector_env(short_world: World) -> None:
    """Gymnasium's SyncVectorEnv over the single env (same world) gives the same info keys, each
    with its ``_key`` mask."""
    native = CascadeSessionVectorEnv(3, world=short_world)
    reference = gym.make_vec("CascadeSession-v0", num_envs=3, vectorization_mode="sync", world=short_world)
    for env in (native, reference):
        env.reset(seed=1)
    actions = np.tile(np.arange(K), (3, 1))
    *_, native_info = native.step(actions)
    *_, reference_info = reference.step(actions)
    assert set(native_info) == set(reference_info)
    for key, value in reference_info.items():
        assert np.asarray(native_info[key]).shape == np.asarray(value).shape, key
    reference.close()
