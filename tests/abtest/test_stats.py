"""analyse(): Welch and delta-method tests, relative lifts, CUPED, records, bad input.

Monte-Carlo checks state their tolerance where they make it: a rate over R replicates is
Binomial(R, p) / R, so p ± 3.29·√(p(1−p)/R) holds with probability 99.9 %; a standard
deviation estimated from B draws has relative sd ≈ 1/√(2(B−1)) for near-normal draws.
Seeds are fixed, so each check is one deterministic draw that a correct implementation
passes with probability ≥ 99.9 %.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from abtest import Mean, Ratio, Results, analyse
from abtest.stats import effective_users

Z999 = 3.29  # two-sided 99.9 % normal quantile


def two_arms(control: np.ndarray, treatment: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    """A frame with the control rows first; ``columns`` hold control then treatment values."""
    arm = np.repeat(["control", "treatment"], [len(control), len(treatment)])
    return pd.DataFrame({"arm": arm, "y": np.concatenate([control, treatment]), **columns})


def clicks_and_views(rng: np.random.Generator, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-user page views and clicks with user-level CTR heterogeneity (Beta, mean ``ctr``)."""
    views = 1 + rng.poisson(rng.gamma(2.0, 2.0, n))
    clicks = rng.binomial(views, rng.beta(5 * ctr, 5 * (1 - ctr), n))
    return clicks.astype(float), views.astype(float)


samples = hnp.arrays(
    np.float64,
    st.integers(2, 40),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)


@given(samples, samples)
def test_welch_matches_scipy(control: np.ndarray, treatment: np.ndarray) -> None:
    assume(control.std() > 1e-3 and treatment.std() > 1e-3)
    rec = analyse(two_arms(control, treatment), "arm", "control", {"y": Mean("y")}).records[0]
    ref = stats.ttest_ind(treatment, control, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert rec.effect == pytest.approx(treatment.mean() - control.mean(), rel=1e-9, abs=1e-9)
    assert rec.pvalue == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
    assert (rec.effect_ci_lower, rec.effect_ci_upper) == pytest.approx((ci.low, ci.high), rel=1e-6, abs=1e-9)


def records_close(a: Results, b: Results) -> None:
    for x, y in zip(a.records, b.records, strict=True):
        for u, v in zip(dataclasses.astuple(x), dataclasses.astuple(y), strict=True):
            if isinstance(u, float):
                assert u == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True)
            else:
                assert u == v


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(10, 200))
def test_results_do_not_depend_on_row_order(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    clicks, views = clicks_and_views(rng, n, 0.1)
    data = pd.DataFrame(
        {
            "arm": rng.choice(["a", "b", "c"], n),
            "clicks": clicks,
            "views": views,
            "pre": clicks + rng.normal(size=n),
        }
    )
    assume(data["arm"].value_counts().min() >= 2 and data["arm"].nunique() == 3)
    metrics = {"clicks": Mean("clicks", covariate="pre"), "pctr": Ratio("clicks", "views")}
    shuffled = data.sample(frac=1.0, random_state=rng)
    records_close(analyse(data, "arm", "a", metrics), analyse(shuffled, "arm", "a", metrics))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(4, 200))
def test_swapping_arms_negates_the_effect(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    clicks, views = clicks_and_views(rng, n, 0.1)
    data = pd.DataFrame({"arm": np.arange(n) % 2, "clicks": clicks, "views": views})
    metrics = {"clicks": Mean("clicks"), "pctr": Ratio("clicks", "views")}
    ab = analyse(data, "arm", 0, metrics).to_pandas()
    ba = analyse(data, "arm", 1, metrics).to_pandas()
    np.testing.assert_allclose(ba["effect"], -ab["effect"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ba["effect_ci_lower"], -ab["effect_ci_upper"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ba["pvalue"], ab["pvalue"], rtol=1e-9, equal_nan=True)


def test_ratio_standard_error_matches_a_user_level_bootstrap() -> None:
    rng = np.random.default_rng(7)
    n, b = 2000, 2000
    (cc, cv), (tc, tv) = clicks_and_views(rng, n, 0.10), clicks_and_views(rng, n, 0.11)
    data = two_arms(cc, tc, clicks=np.concatenate([cc, tc]), views=np.concatenate([cv, tv]))
    rec = analyse(data, "arm", "control", {"pctr": Ratio("clicks", "views")}).records[0]

    def boot_ratios(clicks: np.ndarray, views: np.ndarray) -> np.ndarray:
        idx = rng.integers(0, n, (b, n))  # resample users, not page views
        return clicks[idx].sum(1) / views[idx].sum(1)

    boot_se = (boot_ratios(tc, tv) - boot_ratios(cc, cv)).std(ddof=1)
    # The bootstrap SE has relative sd ≈ 1/√(2(B−1)) = 0.016; 3.29 of those is 0.052, plus
    # the delta method's O(1/n) linearisation error (< 0.001 at n = 2000).
    tolerance = Z999 / math.sqrt(2 * (b - 1)) + 1e-3
    assert rec.std_err == pytest.approx(boot_se, rel=tolerance)
    # A page-level binomial SE ignores that a user's pages are correlated and is far too small:
    # the comparison above can tell the two apart.
    pooled = (cc.sum() + tc.sum()) / (cv.sum() + tv.sum())
    naive_se = math.sqrt(pooled * (1 - pooled) * (1 / cv.sum() + 1 / tv.sum()))
    assert naive_se < boot_se * (1 - 2 * tolerance)


def cuped_data(rng: np.random.Generator, n: int, rho: float, effect: float) -> pd.DataFrame:
    """y = 1 + effect·treated + ρ·x + √(1−ρ²)·e, x the pre-period covariate, corr(x, y) = ρ."""
    treated = np.arange(n) % 2
    x = rng.normal(size=n)
    y = 1 + effect * treated + rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)
    return pd.DataFrame({"arm": np.where(treated, "treatment", "control"), "y": y, "x": x})


def test_cuped_removes_the_correlated_share_of_variance() -> None:
    n, rho = 40_000, 0.6
    data = cuped_data(np.random.default_rng(3), n, rho, effect=0.1)
    rec = analyse(data, "arm", "control", {"y": Mean("y", covariate="x")}).records[0]
    assert rec.cuped
    # The reduction estimates ρ² = 0.36 by the squared sample correlation r²: sd(r) ≈ (1−ρ²)/√n,
    # sd(r²) ≈ 2ρ·sd(r) = 0.0038 at n = 40,000, so 3.29 sd is 0.013.
    sd_r2 = 2 * rho * (1 - rho**2) / math.sqrt(n)
    assert rec.variance_reduction == pytest.approx(rho**2, abs=Z999 * sd_r2)


def test_cuped_does_nothing_with_an_uncorrelated_covariate() -> None:
    n = 40_000
    data = cuped_data(np.random.default_rng(4), n, rho=0.0, effect=0.1)
    with_x = analyse(data, "arm", "control", {"y": Mean("y", covariate="x")}).records[0]
    without = analyse(data, "arm", "control", {"y": Mean("y")}).records[0]
    # Under independence n·r² ~ χ²(1), whose 99.9 % quantile is 10.83.
    assert abs(with_x.variance_reduction) < stats.chi2.ppf(0.999, 1) / n
    # The effect then moves by θ·(x̄_T − x̄_C) with θ ≈ r: O(1/n), far inside its SE.
    assert with_x.effect == pytest.approx(without.effect, abs=0.05 * without.std_err)


def test_cuped_is_unbiased_and_its_standard_error_is_calibrated() -> None:
    rng = np.random.default_rng(5)
    reps, n, rho, effect = 400, 2000, 0.6, 0.1
    metrics = {"raw": Mean("y"), "cuped": Mean("y", covariate="x")}
    table = pd.concat(
        [analyse(cuped_data(rng, n, rho, effect), "arm", "control", metrics).to_pandas() for _ in range(reps)]
    )
    raw, cuped = (table[table["metric"] == name] for name in ("raw", "cuped"))
    # Mean of R estimates: sd = sd(estimate)/√R, so 3.29 of those bound |bias| at 99.9 %.
    assert abs(cuped["effect"].mean() - effect) < Z999 * cuped["effect"].std() / math.sqrt(reps)
    # Reported SE vs the SE across replicates: relative sd of a sample sd ≈ 1/√(2(R−1)) = 0.035.
    tolerance = Z999 / math.sqrt(2 * (reps - 1))
    assert cuped["std_err"].mean() == pytest.approx(cuped["effect"].std(), rel=tolerance)
    # CUPED shrinks the SE by √(1 − ρ²) = 0.8. The per-replicate reduction r² has sd
    # 2ρ(1−ρ²)/√n = 0.017, so its mean over R replicates has sd 0.0009: 1 % is > 3.29 sd.
    assert cuped["std_err"].mean() / raw["std_err"].mean() == pytest.approx(math.sqrt(1 - rho**2), rel=0.01)


def ratio_data(rng: np.random.Generator, n: int, lift: float) -> pd.DataFrame:
    """Clicks and views in a pre-period and an experiment period; treatment multiplies CTR.

    Each user's CTR (mean 0.09) and activity are the same in both periods, so the pre-period
    pCTR predicts this period's. CTR is independent of views, so the true pCTR effect is
    0.09·lift.
    """
    treated = np.arange(n) % 2
    ctr = 0.9 * rng.beta(0.5, 4.5, n)
    rate = rng.gamma(2.0, 2.0, n)
    pre_views, views = 1 + rng.poisson(rate), 1 + rng.poisson(rate)
    return pd.DataFrame(
        {
            "arm": treated,
            "clicks": rng.binomial(views, ctr * (1 + lift * treated)),
            "views": views,
            "pre_clicks": rng.binomial(pre_views, ctr),
            "pre_views": pre_views,
        }
    )


def test_cuped_on_a_ratio_metric_is_unbiased_and_calibrated() -> None:
    rng = np.random.default_rng(6)
    reps, n, lift = 400, 2000, 0.1
    metrics = {
        "raw": Ratio("clicks", "views"),
        "cuped": Ratio("clicks", "views", covariate=("pre_clicks", "pre_views")),
    }
    table = pd.concat([analyse(ratio_data(rng, n, lift), "arm", 0, metrics).to_pandas() for _ in range(reps)])
    raw, cuped = (table[table["metric"] == name] for name in ("raw", "cuped"))
    assert cuped["cuped"].all() and not raw["cuped"].any()
    # Same tolerances as for a Mean: 3.29 sd of the mean of R estimates for the bias, and
    # relative sd 1/√(2(R−1)) = 0.035 for the SE across replicates.
    assert abs(cuped["effect"].mean() - 0.09 * lift) < Z999 * cuped["effect"].std() / math.sqrt(reps)
    tolerance = Z999 / math.sqrt(2 * (reps - 1))
    assert cuped["std_err"].mean() == pytest.approx(cuped["effect"].std(), rel=tolerance)
    # The pre-period removes about a quarter of the variance in this world.
    assert cuped["variance_reduction"].mean() > 0.2
    assert cuped["std_err"].mean() < raw["std_err"].mean()


def test_cuped_switch_turns_adjustment_off() -> None:
    data = cuped_data(np.random.default_rng(8), 200, 0.6, 0.1)
    rec = analyse(data, "arm", "control", {"y": Mean("y", covariate="x")}, cuped=False).records[0]
    assert not rec.cuped and rec.variance_reduction == 0.0


@pytest.mark.parametrize("lift_ci", ["delta", "fieller"])
def test_relative_interval_covers_the_true_lift_at_the_nominal_rate(lift_ci: str) -> None:
    rng = np.random.default_rng(9 if lift_ci == "delta" else 10)
    reps, n = 1000, 500
    metrics = {"gmv": Mean("gmv"), "pctr": Ratio("clicks", "views")}
    true_lift = {"gmv": 1.2 / 1.0 - 1, "pctr": 0.11 / 0.10 - 1}
    covered = {name: 0 for name in metrics}
    for _ in range(reps):
        (cc, cv), (tc, tv) = clicks_and_views(rng, n, 0.10), clicks_and_views(rng, n, 0.11)
        gmv = np.concatenate([rng.exponential(1.0, n), rng.exponential(1.2, n)])
        data = two_arms(cc, tc, clicks=np.concatenate([cc, tc]), views=np.concatenate([cv, tv]), gmv=gmv)
        for rec in analyse(data, "arm", "control", metrics, lift_ci=lift_ci).records:
            covered[rec.metric] += rec.rel_ci_lower <= true_lift[rec.metric] <= rec.rel_ci_upper
    # Coverage ~ Binomial(R, 0.95)/R: 0.95 ± 3.29·√(0.95·0.05/1000) = 0.95 ± 0.023.
    tolerance = Z999 * math.sqrt(0.95 * 0.05 / reps)
    for name, hits in covered.items():
        assert hits / reps == pytest.approx(0.95, abs=tolerance), name


def test_fieller_and_delta_agree_for_large_samples() -> None:
    rng = np.random.default_rng(11)
    n = 100_000
    data = two_arms(rng.exponential(1.0, n), rng.exponential(1.01, n))
    delta, fieller = (
        analyse(data, "arm", "control", {"y": Mean("y")}, lift_ci=ci).records[0]
        for ci in ("delta", "fieller")
    )
    width = delta.rel_ci_upper - delta.rel_ci_lower
    # The two differ at second order in SE/mean (≈ 0.003 here): a fraction of a percent of the width.
    assert fieller.rel_ci_lower == pytest.approx(delta.rel_ci_lower, abs=0.01 * width)
    assert fieller.rel_ci_upper == pytest.approx(delta.rel_ci_upper, abs=0.01 * width)


def test_fieller_is_unbounded_when_the_control_mean_is_not_significant() -> None:
    rng = np.random.default_rng(12)
    data = two_arms(rng.normal(0.0, 1.0, 50), rng.normal(1.0, 1.0, 50))
    rec = analyse(data, "arm", "control", {"y": Mean("y")}, lift_ci="fieller").records[0]
    assert (rec.rel_ci_lower, rec.rel_ci_upper) == (-math.inf, math.inf)


def test_records_hold_every_metric_and_treatment_and_a_corrected_pvalue() -> None:
    rng = np.random.default_rng(13)
    n = 3000
    clicks, views = clicks_and_views(rng, n, 0.1)
    data = pd.DataFrame(
        {"arm": np.array(["A", "B", "C"])[np.arange(n) % 3], "clicks": clicks, "views": views}
    )
    data.loc[data["arm"] == "C", "clicks"] += 1
    metrics = {"clicks": Mean("clicks"), "pctr": Ratio("clicks", "views")}
    table = analyse(data, "arm", "A", metrics, correction="holm").to_pandas()
    assert list(zip(table["metric"], table["treatment"], strict=True)) == [
        ("clicks", "B"),
        ("clicks", "C"),
        ("pctr", "B"),
        ("pctr", "C"),
    ]
    assert (table["control"] == "A").all() and (table["n_control"] == 1000).all()
    assert table["effect"].to_numpy() == pytest.approx(table["treatment_value"] - table["control_value"])
    assert table["rel_effect"].to_numpy() == pytest.approx(
        table["treatment_value"] / table["control_value"] - 1
    )
    assert (table["pvalue_adjusted"] >= table["pvalue"]).all()
    assert table.set_index(["metric", "treatment"])["significant"].to_dict() == {
        ("clicks", "B"): False,
        ("clicks", "C"): True,
        ("pctr", "B"): False,
        ("pctr", "C"): True,
    }


def test_constant_metric_gives_nan_pvalue_not_an_error() -> None:
    data = two_arms(np.zeros(5), np.zeros(5))
    rec = analyse(data, "arm", "control", {"y": Mean("y")}).records[0]
    assert rec.effect == 0 and math.isnan(rec.pvalue) and math.isnan(rec.pvalue_adjusted)
    assert not rec.significant


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        (None, {"metrics": {"m": Mean("missing")}}, "unknown metric column 'missing'"),
        (None, {"metrics": {"m": Ratio("y", "missing")}}, "unknown metric column 'missing'"),
        (None, {"control": "nobody"}, "unknown control arm 'nobody'"),
        (None, {"arm": "group"}, "unknown arm column"),
        (None, {"metrics": {}}, "no metrics"),
        (None, {"metrics": {"m": "y"}}, "must be a Mean or a Ratio"),
        (None, {"correction": "bonferroni"}, "correction"),
        (None, {"alpha": 1.5}, "alpha"),
        ("lonely", {}, ">= 2 users"),
        ("nan", {}, "NaN"),
        ("text", {"metrics": {"m": Mean("word")}}, "numeric"),
        ("zero_den", {"metrics": {"m": Ratio("y", "zero")}}, "denominator"),
        ("one_arm", {}, "only one arm"),
    ],
)
def test_bad_input_raises_a_clear_error(change: str | None, kwargs: dict, match: str) -> None:
    data = two_arms(np.arange(5.0), np.arange(5.0) + 1)
    data["word"] = "x"
    data["zero"] = 0.0
    if change == "lonely":
        data.loc[len(data)] = {"arm": "solo", "y": 1.0, "word": "x", "zero": 0.0}
    elif change == "nan":
        data.loc[3, "y"] = np.nan
    elif change == "one_arm":
        data = data[data["arm"] == "control"]
    args = {"data": data, "arm": "arm", "control": "control", "metrics": {"y": Mean("y")}} | kwargs
    with pytest.raises(ValueError, match=match):
        analyse(**args)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Mean(""), "column"),
        (lambda: Mean("y", covariate=""), "covariate"),
        (lambda: Ratio("y", ""), "denominator"),
        (lambda: Ratio("y", "v", covariate=("x",)), "pair"),
    ],
)
def test_metric_declarations_are_validated(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_a_ratio_covariate_list_becomes_a_tuple() -> None:
    # Configs read from TOML hold lists; the metric stays hashable.
    metric = Ratio("clicks", "views", covariate=["pre_clicks", "pre_views"])
    assert metric.covariate == ("pre_clicks", "pre_views")
    assert hash(metric) == hash(Ratio("clicks", "views", covariate=("pre_clicks", "pre_views")))


def test_effective_users_counts_who_carries_the_variance() -> None:
    arms = np.repeat([0, 1], 50)
    equal = np.tile([1.0, 0.0], 50)  # 25 ones per arm
    assert effective_users(equal, arms) == pytest.approx(100)
    one = np.zeros(100)
    one[7] = 5.0  # a single user carries all the variance
    assert effective_users(one, arms) == pytest.approx(1.0, rel=0.05)
    assert effective_users(np.ones(100), arms) == math.inf
    hits, buys = np.ones(100), np.ones(100)
    hits[3] = 0.0  # one miss among 100 purchases: the ratio's variance is that user's
    assert effective_users(hits, arms, buys) < 1.2


def test_analyse_paired_mean_is_scipy_ttest_rel() -> None:
    from scipy import stats as sps  # noqa: PLC0415

    from abtest.stats import analyse_paired  # noqa: PLC0415

    rng = np.random.default_rng(7)
    c = rng.poisson(3.0, 200).astype(float)
    t = c + rng.normal(0.2, 1.0, 200)
    data = pd.DataFrame(
        {"user": np.tile(np.arange(200), 2), "arm": ["c"] * 200 + ["t"] * 200, "y": np.r_[c, t]}
    )
    r = analyse_paired(data, "arm", "user", "c", {"y": Mean("y")}, correction="none").records[0]
    ref = sps.ttest_rel(t, c)
    lo, hi = ref.confidence_interval(0.95)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    assert (r.effect_ci_lower, r.effect_ci_upper) == pytest.approx((lo, hi), rel=1e-9)
