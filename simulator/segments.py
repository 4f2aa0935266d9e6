"""User segments from logged behaviour, for per-segment A/B results (seed 000's "mindful" users).

``user_segments(world, users, samples)`` labels each user from what a real team could see:

* ``activity``: ``"heavy"`` if the user's logged pages per logged day reach the median over the
  users of ``samples`` who have logs, ``"light"`` below it, ``"unlogged"`` without logs (a cold
  user for models trained on these logs);
* ``mindful``: few accidental-looking behaviours in the logged sequence. A behaviour looks
  accidental if its dwell is short (under ``SHORT_DWELL_S``) when the world logs dwell times
  (``history_dwell_separation > 0``), else if its category is not among the sequence's three most
  frequent ones. Mindful users are those whose accidental-looking share is at most the world's
  lower tercile (computed over all users, so a user's label never depends on who else is asked);
* ``arrival_day``: the day the user arrived (0 unless ``new_user_share_per_day > 0``);
* ``warm`` (only when ``trained`` is given, the ids of the users whose logs trained the models):
  ``"warm"`` for those, ``"cold"`` for every other user (held out of training, unlogged, or
  arrived after the logged days). ``abtest.segments.trained_users`` finds them for an experiment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.world import CLEAN_DWELL_S, World

SHORT_DWELL_S = CLEAN_DWELL_S / 4
"""A logged dwell below this (a quarter of a clean behaviour's median) looks accidental."""

TOP_CATEGORIES = 3
"""Without dwell times, a behaviour outside the sequence's this many top categories looks accidental."""

DIMENSIONS = ("activity", "mindful", "arrival_day", "warm")
"""The label columns of ``user_segments`` (``warm`` only with ``trained``)."""


def accidental_looking_share(world: World) -> np.ndarray:
    """Per user (U,), the share of the logged sequence that looks accidental (see module doc)."""
    if world.history_dwell is not None:
        return (world.history_dwell < SHORT_DWELL_S).mean(axis=1)
    cats = world.item_category[world.history]  # (U, H)
    n_cat = world.config.n_categories
    counts = np.zeros((len(cats), n_cat), dtype=np.int64)
    np.add.at(counts, (np.arange(len(cats))[:, None], cats), 1)
    top = np.argsort(-counts, axis=1, kind="stable")[:, :TOP_CATEGORIES]
    in_top = (cats[:, :, None] == top[:, None, :]).any(axis=2)
    return 1.0 - in_top.mean(axis=1)


def user_segments(
    world: World, users: np.ndarray, samples: pd.DataFrame | None = None, trained: np.ndarray | None = None
) -> pd.DataFrame:
    """Segment labels of ``users`` (one row each, in order); ``samples`` are logs with the columns
    of ``simulator.logs.SAMPLE_SCHEMA`` (without them every user is ``"unlogged"``; only
    user_id, day, session and page are read); ``trained``: the users whose logs trained the
    models (adds the ``warm`` column)."""
    users = np.asarray(users, dtype=np.int64)
    if users.size and (users.min() < 0 or users.max() >= world.config.n_users):
        raise ValueError(f"user ids must be in [0, {world.config.n_users}), got {users.min()}..{users.max()}")
    activity = np.full(users.size, "unlogged", dtype=object)
    if samples is not None and len(samples):
        exposed = samples[samples["page"] >= 0]
        pages = exposed.drop_duplicates(["user_id", "day", "session", "page"]).groupby("user_id").size()
        per_day = pages / exposed.groupby("user_id")["day"].nunique()
        median = float(per_day.median())
        rate = per_day.reindex(users).to_numpy()
        logged = ~np.isnan(rate)
        activity[logged] = np.where(rate[logged] >= median, "heavy", "light")
    share = accidental_looking_share(world)
    mindful = share[users] <= np.quantile(share, 1 / 3)
    labels = pd.DataFrame(
        {
            "user_id": users,
            "activity": activity,
            "mindful": mindful,
            "arrival_day": world.user_arrival_day[users],
        }
    )
    if trained is not None:
        labels["warm"] = np.where(np.isin(users, trained), "warm", "cold")
    return labels
