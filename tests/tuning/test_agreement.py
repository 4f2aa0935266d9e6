"""Offline-online agreement: Kendall tau-b matches scipy (ties included), the bootstrap
interval behaves, and the table reports what each metric would have picked."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tuning.agreement import agreement_table, bootstrap_tau_ci, format_agreement, kendall_tau

values = st.integers(min_value=-3, max_value=3).map(float) | st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=2, max_size=30))
def test_kendall_tau_is_scipys_tau_b(pairs):
    x, y = np.array(pairs).T
    expected = stats.kendalltau(x, y).statistic
    got = kendall_tau(x, y)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        kendall_tau([1, np.nan], [1, 2])
    assert math.isnan(kendall_tau([1.0], [2.0]))


def test_bootstrap_interval_contains_the_estimate_and_is_degenerate_for_perfect_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=1.0, size=40)
    lo, hi = bootstrap_tau_ci(x, y, 500, 0.05, np.random.default_rng(1))
    assert lo < kendall_tau(x, y) < hi
    assert bootstrap_tau_ci(x, 2 * x, 200, 0.05, np.random.default_rng(2)) == (1.0, 1.0)
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
