"""Counter-based random numbers: pure functions of their keys, and uniform.

Statistical checks use p > 1e-3: the keys are fixed, so each check is one deterministic
draw of a p-value that is Uniform(0, 1) if the generator is good; a correct generator
therefore fails such a check with probability 1e-3 (once, for this key choice), while a
biased one fails it every time.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from common.rng import Stream, as_generator, gumbel, hash_keys, uniform

seeds = st.integers(0, 2**63 - 1)
streams = st.sampled_from(list(Stream))
keys_1d = hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(0, 2**62))


@given(seeds, streams, keys_1d, keys_1d)
def test_uniform_lies_in_unit_interval(seed: int, stream: Stream, a: np.ndarray, b: np.ndarray) -> None:
    u = uniform(seed, stream, a[:, None], b[None, :])
    assert u.dtype == np.float64
    assert ((u >= 0.0) & (u < 1.0)).all()


@given(seeds, streams, keys_1d, keys_1d)
def test_uniform_of_a_broadcast_grid_equals_elementwise_draws(
    seed: int, stream: Stream, a: np.ndarray, b: np.ndarray
) -> None:
    grid = uniform(seed, stream, a[:, None], 5, b[None, :])
    assert grid.shape == (len(a), len(b))
    for i in range(0, len(a), 7):
        for j in range(0, len(b), 5):
            assert grid[i, j] == uniform(seed, stream, int(a[i]), 5, int(b[j]))


@given(seeds, streams, keys_1d)
def test_uniform_is_a_pure_function_of_its_keys(seed: int, stream: Stream, a: np.ndarray) -> None:
    first = uniform(seed, stream, a, 3)
    uniform(seed, stream, a[::-1], 4)  # unrelated draws in between change nothing
    np.testing.assert_array_equal(uniform(seed, stream, a, 3), first)
    perm = np.random.default_rng(0).permutation(len(a))
    np.testing.assert_array_equal(uniform(seed, stream, a[perm], 3), first[perm])


def _independent(x: np.ndarray, y: np.ndarray) -> bool:
    """No equal draws and |correlation| below 5 standard errors."""
    return not (x == y).any() and abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(len(x))


def test_uniform_differs_across_streams() -> None:
    keys = np.arange(20_000)
    draws = {s: uniform(0, s, keys) for s in Stream}
    for s in Stream:
        for t in Stream:
            if s < t:
                assert _independent(draws[s], draws[t]), (s, t)


@pytest.mark.parametrize(("seed_a", "seed_b"), [(0, 1), (1, 2), (0, 2**32), (123, 124)])
def test_uniform_differs_across_seeds(seed_a: int, seed_b: int) -> None:
    keys = np.arange(20_000)
    assert _independent(uniform(seed_a, Stream.CLICK, keys), uniform(seed_b, Stream.CLICK, keys))


def test_uniform_depends_on_key_order() -> None:
    a, b = np.arange(5_000), np.arange(5_000)[::-1]
    assert _independent(uniform(0, Stream.CLICK, a, b), uniform(0, Stream.CLICK, b, a))


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param((np.arange(100_000),), id="counter"),
        pytest.param((np.arange(100)[:, None], 0, 0, np.arange(1_000)[None, :]), id="user-x-item"),
        pytest.param((7, np.arange(100_000) * 2**20), id="strided"),
    ],
)
def test_uniform_draws_are_uniform(keys: tuple) -> None:
    u = uniform(42, Stream.CLICK, *keys).ravel()
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_consecutive_keys_give_independent_draws() -> None:
    """Chi-square on a 10 x 10 grid of (u_k, u_{k+1}): 1,000 expected per cell."""
    u = uniform(5, Stream.CONTINUE, 17, np.arange(100_001))
    cells = np.minimum((u * 10).astype(int), 9)
    table = np.bincount(cells[:-1] * 10 + cells[1:], minlength=100)
    assert stats.chisquare(table).pvalue > 1e-3


def test_hash_bits_are_balanced() -> None:
    """Every one of the 64 output bits is 1 in half of 100k counter hashes (binomial, 5 sigma)."""
    h = hash_keys(9, Stream.POLICY, np.arange(100_000))
    ones = ((h[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    assert np.abs(ones - 0.5).max() < 5 * 0.5 / np.sqrt(len(h))


def test_gumbel_max_samples_the_softmax() -> None:
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    n = 40_000
    g = gumbel(3, Stream.RECALL_TASTE, np.arange(n)[:, None], np.arange(len(logits))[None, :])
    counts = np.bincount((logits + g).argmax(axis=1), minlength=len(logits))
    assert stats.chisquare(counts, n * np.exp(logits)).pvalue > 1e-3


def test_as_generator_accepts_seed_generator_and_seed_sequence() -> None:
    g = np.random.default_rng(5)
    assert as_generator(g) is g
    expected = np.random.default_rng(5).random(3)
    np.testing.assert_array_equal(as_generator(5).random(3), expected)
    np.testing.assert_array_equal(as_generator(np.random.SeedSequence(5)).random(3), expected)
