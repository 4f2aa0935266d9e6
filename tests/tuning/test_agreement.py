"""Offline-online agreement: Kendall tau-b is the pairwise τ-b (ties included), the bootstrap
interval behaves, and the table reports what each metric would have picked."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from policies.metrics import kendall_tau
from tuning.agreement import agreement_table, bootstrap_tau_ci, format_agreement

values = st.integers(min_value=-3, max_value=3).map(float) | st.floats(-1e3, 1e3, allow_nan=False)


def tau_b_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b counted pair by pair (the hand-written τ this module used before it
    shared ``policies.metrics.kendall_tau``): (P − Q) / √((n₀ − n_x)(n₀ − n_y))."""
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = math.sqrt(float(n0 - np.count_nonzero(sx == 0)) * float(n0 - np.count_nonzero(sy == 0)))
    return float((sx * sy).sum() / denom) if denom > 0 else math.nan


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=2, max_size=30))
def test_the_tables_tau_is_the_pairwise_tau_b(pairs):
    x, y = np.array(pairs).T
    trials = pd.DataFrame({"trial_id": [f"t{k}" for k in range(len(x))], "m": x, "objective": y})
    got = agreement_table(trials, ["m"], n_boot=1)["tau"].iloc[0]
    expected = tau_b_by_pairs(x, y)
    assert stats.kendalltau(x, y).statistic == pytest.approx(expected, abs=1e-12, nan_ok=True)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_tau_is_undefined_for_one_trial():
    trials = pd.DataFrame({"trial_id": ["a"], "m": [0.5], "objective": [0.01]})
    assert math.isnan(agreement_table(trials, ["m"], n_boot=10)["tau"].iloc[0])


def test_bootstrap_interval_contains_the_estimate_and_is_degenerate_for_perfect_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=1.0, size=40)
    lo, hi = bootstrap_tau_ci(x, y, 500, 0.05, np.random.default_rng(1))
    assert lo < kendall_tau(x[None], y[None]) < hi
    assert bootstrap_tau_ci(x, 2 * x, 200, 0.05, np.random.default_rng(2)) == pytest.approx(
        (1.0, 1.0), abs=1e-12
    )
    assert bootstrap_tau_ci(x, y, 500, 0.05, np.random.default_rng(1)) == (lo, hi)  # seeded


def test_agreement_table_reports_each_metrics_pick():
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "objective": [0.10, 0.02, -0.05, 0.04],
            "offline/good": [0.9, 0.5, 0.1, 0.6],  # same order as the objective
            "offline/bad": [0.1, 0.5, 0.9, 0.4],  # reversed
            "offline/nan": [np.nan, 0.5, 0.1, 0.6],  # trial a has no value
        }
    )
    table = agreement_table(
        trials, ["offline/good", "offline/bad", "offline/nan", "offline/missing"], n_boot=50
    )
    rows = table.set_index("metric")
    assert list(rows.index) == ["offline/good", "offline/bad", "offline/nan"]
    assert rows.loc["offline/good", "tau"] == 1.0 and rows.loc["offline/bad", "tau"] == -1.0
    assert rows.loc["offline/good", "pick"] == "a" and rows.loc["offline/good", "picks_winner"]
    assert rows.loc["offline/bad", "pick"] == "c" and rows.loc["offline/bad", "pick_online_rank"] == 4
    assert rows.loc["offline/bad", "regret"] == pytest.approx(0.15)
    assert rows.loc["offline/nan", "trials"] == 3 and rows.loc["offline/nan", "pick"] == "d"
    text = format_agreement(table, "clicks")
    assert "would have picked the online winner: offline/good" in text
