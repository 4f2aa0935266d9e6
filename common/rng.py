"""Counter-based random numbers: every draw is a pure function of its keys.

The simulator never carries a random *state* through a batch. A draw is
``hash(seed, stream, user, day, session, page, slot)``, so a user's outcome is the
same whether it is simulated alone, in a batch of 10,000, in another order, or on
another Ray worker. The hash is SplitMix64's finaliser applied key by key, which is
fully vectorised in numpy and passes the usual avalanche tests.
"""

from __future__ import annotations

import enum

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))
_TO_UNIT = 2.0**-53


class Stream(enum.IntEnum):
    """Independent purposes of randomness; each gets its own key space."""

    RECALL_TASTE = 1
    RECALL_POPULAR = 2
    RECALL_NEW = 3
    RECALL_EXPLORE = 4
    CLICK = 5
    PURCHASE = 6
    CONTINUE = 7
    OUT_OF_SCENE_COUNT = 8
    OUT_OF_SCENE_CATEGORY = 9
    OUT_OF_SCENE_ITEM = 10
    LOGGING_COARSE = 11
    LOGGING_FINE = 12
    SAMPLE_UNEXPOSED = 13
    SAMPLE_DROPPED = 14
    SAMPLE_RANDOM = 15
    POLICY = 16
    SPLIT = 17
    ASSIGN = 18
    INTERLEAVE = 19
    VALIDATION = 20
    # the world's time phenomena (simulator.world); values fixed by the worlds built with them
    TASTE_DRIFT = 64
    USER_ARRIVAL = 65
    ITEM_ARRIVAL = 66
    FINE_SIGNAL = 67
    HISTORY_NOISE_POPULAR = 68


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser; overwrites ``x`` (a fresh array) in place."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def hash_keys(seed: int, stream: Stream, *keys: np.ndarray | int) -> np.ndarray:
    """A uint64 hash of (seed, stream, *keys); keys broadcast against each other."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(seed, dtype=np.uint64) + _GOLDEN)  # fresh arrays: mixed in place
        h = _mix(h ^ (np.uint64(int(stream)) * _GOLDEN))
        for key in keys:
            k = np.asarray(key).astype(np.uint64)
            h = _mix(h ^ (k + _GOLDEN))
    return h


def uniform(seed: int, stream: Stream, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) (float64, 53 random bits), one per broadcast key."""
    return (hash_keys(seed, stream, *keys) >> _S11).astype(np.float64) * _TO_UNIT


def gumbel(seed: int, stream: Stream, *keys: np.ndarray | int) -> np.ndarray:
    """Standard Gumbel noise; ``argmax(logits + gumbel)`` samples from softmax(logits)."""
    u = uniform(seed, stream, *keys)
    return -np.log(-np.log(u + _TO_UNIT))


def as_generator(rng: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    """Accept the usual ways of passing randomness and return a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
