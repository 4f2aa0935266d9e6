"""Deterministic user-to-arm assignment: a hash of (salt, user id) into buckets, arms by share.

A user's arm is a pure function of the experiment's salt, its layer and the user id, so it
is the same on every day, in every batch and on every Ray worker, and needs no stored
table. Experiments in different layers hash with different keys and are therefore
orthogonal: the arms of one are independent of the arms of the other.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from common.rng import Stream, hash_keys


def _salt_seed(salt: str) -> int:
    """A 64-bit seed from a salt string (blake2b, so similar salts give unrelated seeds)."""
    return int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little")


def user_buckets(salt: str, user_ids: np.ndarray, n_buckets: int = 10_000) -> np.ndarray:
    """The bucket in [0, n_buckets) of each user: ``hash(salt, user) mod n_buckets`` (int64).

    The modulo bias is at most n_buckets / 2**64, far below any test's resolution.
    """
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    users = np.asarray(user_ids)
    if not np.issubdtype(users.dtype, np.integer):
        raise ValueError(f"user_ids must be integers, got dtype {users.dtype}")
    h = hash_keys(_salt_seed(salt), Stream.ASSIGN, users)
    return (h % np.uint64(n_buckets)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Assignment:
    """An experiment's split of users into arms; validated on construction.

    Buckets ``[0, n_buckets)`` are cut at the cumulative shares, so each share is rounded to
    a multiple of ``1 / n_buckets``. An A/A test is simply two arms running the same policy.
    """

    salt: str
    """Names the experiment; a new salt re-randomises every user."""
    arms: tuple[str, ...]
    """Arm names, distinct; the first is conventionally the control."""
    shares: tuple[float, ...]
    """Share of users per arm, > 0, summing to 1."""
    layer: str = "default"
    """Experiments in different layers are orthogonal (independent assignments)."""
    n_buckets: int = 10_000
    """Resolution of the shares."""

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("salt must be a non-empty string")
        if len(self.arms) < 2:
            raise ValueError(f"an experiment needs at least 2 arms, got {self.arms}")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arm names must be distinct, got {self.arms}")
        if len(self.shares) != len(self.arms):
            raise ValueError(f"{len(self.arms)} arms but {len(self.shares)} shares")
        if min(self.shares) <= 0:
            raise ValueError(f"shares must be > 0, got {self.shares}")
        if abs(sum(self.shares) - 1.0) > 1e-9:
            raise ValueError(f"shares must sum to 1, got {sum(self.shares)}")
        if self.n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {self.n_buckets}")
        if np.any(np.diff(self._cuts(), prepend=0) == 0):
            raise ValueError(f"a share smaller than 1/{self.n_buckets} leaves an arm with no bucket")

    def _cuts(self) -> np.ndarray:
        """Upper bucket bound of each arm; the last is n_buckets."""
        cuts = np.rint(np.cumsum(self.shares) * self.n_buckets).astype(np.int64)
        cuts[-1] = self.n_buckets
        return cuts

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        """The arm index (into ``arms``) of each user, int64."""
        # The layer is length-prefixed so that no (layer, salt) pair collides with another.
        key = f"{len(self.layer)}:{self.layer}/{self.salt}"
        buckets = user_buckets(key, user_ids, self.n_buckets)
        return np.searchsorted(self._cuts(), buckets, side="right")

    def arm_of(self, user_id: int) -> str:
        """The arm name of one user."""
        return self.arms[int(self.assign(np.array([user_id]))[0])]
