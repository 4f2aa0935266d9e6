"""A/A calibration on simulator users: re-randomised splits must give uniform p-values.

Per-user metrics are simulated once (every SMALL-world user, popularity ranking, days 1–3,
day 0 as the CUPED pre-period); then the same users are split by R different salts and
analysed as if each split were an experiment. The re-randomisations share their users, so
they are not independent samples of users; they are draws from the randomisation
distribution, under which a calibrated test still rejects with probability α and has
Uniform(0, 1) p-values (randomisation inference). Each salt's split is independent of the
others', so the R p-values of a metric are i.i.d. draws from that distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from abtest import Assignment, Mean, Ratio, analyse
from simulator import SessionKeys, Simulator, World
from simulator.session import SessionTotals, run_static

R = 1000  # re-randomisations
ALPHA = 0.05
# A calibrated false-positive rate is Binomial(R, α) / R: α ± 3.29·√(α(1−α)/R) = 0.05 ± 0.0227
# holds with probability 99.9 % (two-sided, normal approximation, R·α = 50 ≫ 1).
FPR_TOLERANCE = 3.29 * np.sqrt(ALPHA * (1 - ALPHA) / R)

METRICS = {
    "clicks": Mean("clicks"),
    "page_views": Mean("page_views"),
    "purchases": Mean("purchases"),
    "gmv": Mean("gmv"),
    "uctr": Mean("uctr"),
    "pctr": Ratio("clicks", "page_views"),
    "clicks_cuped": Mean("clicks", covariate="pre_clicks"),
    "uctr_cuped": Mean("uctr", covariate="pre_uctr"),
    "pctr_cuped": Ratio("clicks", "page_views", covariate=("pre_clicks", "pre_page_views")),
}


@pytest.fixture(scope="module")
def users(small_world: World, small_sim: Simulator) -> pd.DataFrame:
    ids = np.arange(small_world.config.n_users)

    def popularity(batch) -> np.ndarray:
        return small_world.item_popularity[batch.recall.items]

    def day(d: int) -> SessionTotals:
        return run_static(small_sim, SessionKeys.of(ids, day=d), popularity)

    pre, days = day(0), [day(d) for d in (1, 2, 3)]
    clicks = sum(t.clicks for t in days)
    return pd.DataFrame(
        {
            "user": ids,
            "clicks": clicks,
            "page_views": sum(t.pages for t in days),
            "purchases": sum(t.purchases for t in days),
            "gmv": sum(t.gmv for t in days),
            "uctr": (clicks > 0).astype(float),
            "pre_clicks": pre.clicks,
            "pre_page_views": pre.pages,
            "pre_uctr": (pre.clicks > 0).astype(float),
        }
    )


@pytest.fixture(scope="module")
def aa_pvalues(users: pd.DataFrame) -> pd.DataFrame:
    """(R, metric) raw p-values of R A/A splits."""
    rows = []
    data = users.copy()
    for r in range(R):
        split = Assignment(f"aa-{r}", ("A", "B"), (0.5, 0.5)).assign(users["user"].to_numpy())
        data["arm"] = np.where(split == 0, "A", "B")
        res = analyse(data, "arm", "A", METRICS, alpha=ALPHA, correction="none")
        rows.append({rec.metric: rec.pvalue for rec in res.records})
    return pd.DataFrame(rows)


def test_simulated_users_are_not_degenerate(users: pd.DataFrame) -> None:
    # The checks below mean something only if each metric varies across users.
    assert users["purchases"].gt(0).sum() >= 30
    assert 0.2 < users["uctr"].mean() < 0.95
    assert np.corrcoef(users["clicks"], users["pre_clicks"])[0, 1] > 0.1


@pytest.mark.parametrize("metric", list(METRICS))
def test_false_positive_rate_is_nominal(aa_pvalues: pd.DataFrame, metric: str) -> None:
    rate = (aa_pvalues[metric] < ALPHA).mean()
    assert abs(rate - ALPHA) < FPR_TOLERANCE, rate


@pytest.mark.parametrize("metric", list(METRICS))
def test_pvalues_are_uniform(aa_pvalues: pd.DataFrame, metric: str) -> None:
    assert stats.kstest(aa_pvalues[metric], "uniform").pvalue > 0.001
