"""Statistics of an A/B test at the randomisation unit (the user).

Every estimate below is a per-arm value ``v`` with per-user *influence values* ``l_i``
(mean zero within the arm) such that ``Var(v) ≈ s²(l) / n``, ``s²`` the sample variance
(ddof=1). That one representation serves means, ratios and CUPED alike.

Mean metric (clicks per user, uCTR as the mean of a 0/1 column, GMV per user):
    v = ȳ,  l_i = y_i − ȳ.

Ratio of means (pCTR = Σ clicks / Σ page views), delta method (linearisation):
    v = ȳ / d̄,  l_i = (y_i − v·d_i) / d̄.
Users, not page views, are the independent units, so a page-level binomial variance would
be too small whenever a user's pages are correlated.

Difference of two arms, Welch: ``Δ = v_T − v_C``, ``SE² = V_T + V_C`` with ``V = s²(l)/n``,
Welch–Satterthwaite ``df = (V_T + V_C)² / (V_T²/(n_T−1) + V_C²/(n_C−1))``, p-value and CI from
Student's t with ``df`` (for a Mean this is exactly ``scipy.stats.ttest_ind(equal_var=False)``).

Relative lift ``r = v_T / v_C − 1``:
    delta method, including the control's variance:  SE²(r) = V_T / v_C² + v_T² V_C / v_C⁴;
    Fieller: {ρ : (v_T − ρ v_C)² ≤ q² (V_T + ρ² V_C)}, q the critical value. With
    a = v_C² − q² V_C this is the interval (v_T v_C ± q √(a V_T + v_T² V_C)) / a when a > 0,
    i.e. when the control value is significantly nonzero; otherwise the set is unbounded and
    the bounds are reported as (−inf, inf).

CUPED (Deng et al. 2013) with a pre-period covariate x, per-arm estimate ``v_x`` and influence
``l^x``: ``θ = Σ l·l^x / Σ (l^x)²`` over both arms pooled (within-arm centred), then
    v' = v − θ (v_x − v_x,pooled),  l' = l − θ l^x,
which for a Mean is ``y − θ (x − x̄)``. For a Ratio the covariate is a ratio too, and CUPED
acts on the linearised metric. The variance shrinks by the share ρ² (ρ = corr(l, l^x)) while
the effect stays unbiased, because the arms' covariate means differ only by chance.

Always-valid confidence sequence (normal mixture mSPRT, Johari et al. 2017; Howard et al.
2021): with the effect's variance ``V = SE²`` and a N(0, τ²) mixture over the effect,
    Δ ± √( V (V + τ²)/τ² · (2 log(1/α) + log((V + τ²)/V)) )
covers the true effect at *every* look simultaneously with probability ≥ 1 − α, so a test
may be read daily and stopped at any time. τ is given standardised, ``τ = tau·SE·√n``,
which makes ``τ²/V = tau²·n``: the sequence is narrowest near ``n ≈ 8.2 / tau²`` at α = 0.05.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty column name, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Mean:
    """A per-user mean, e.g. ``Mean("clicks")`` or ``Mean("uctr", covariate="pre_uctr")``."""

    column: str
    covariate: str | None = None
    """Pre-period column for CUPED."""

    def __post_init__(self) -> None:
        _check_name(self.column, "column")
        if self.covariate is not None:
            _check_name(self.covariate, "covariate")


@dataclasses.dataclass(frozen=True)
class Ratio:
    """A ratio of means analysed by the delta method, e.g. ``Ratio("clicks", "page_views")``."""

    numerator: str
    denominator: str
    covariate: tuple[str, str] | None = None
    """Pre-period (numerator, denominator) columns for CUPED."""

    def __post_init__(self) -> None:
        _check_name(self.numerator, "numerator")
        _check_name(self.denominator, "denominator")
        if self.covariate is not None:
            if isinstance(self.covariate, str) or len(self.covariate) != 2:
                raise ValueError(f"covariate must be a (numerator, denominator) pair, got {self.covariate!r}")
            object.__setattr__(self, "covariate", tuple(self.covariate))  # a TOML list becomes a tuple
            for name in self.covariate:
                _check_name(name, "covariate")


Metric = Mean | Ratio


@dataclasses.dataclass(frozen=True)
class EffectRecord:
    """One metric × treatment comparison (flat, so a list of them is a table)."""

    metric: str
    control: str
    treatment: str
    control_value: float
    """Control estimate (CUPED-adjusted when ``cuped``)."""
    treatment_value: float
    """Treatment estimate (CUPED-adjusted when ``cuped``)."""
    effect: float
    """treatment_value − control_value."""
    effect_ci_lower: float
    effect_ci_upper: float
    std_err: float
    """Standard error of ``effect``; feeds ``always_valid_ci``."""
    rel_effect: float
    """treatment_value / control_value − 1 (nan when the control value is 0)."""
    rel_ci_lower: float
    rel_ci_upper: float
    pvalue: float
    """Two-sided Welch p-value; nan when both arms have zero variance."""
    pvalue_adjusted: float
    """After the multiple-testing correction over all metrics × treatments."""
    significant: bool
    """pvalue_adjusted < alpha. The CIs are per comparison, not simultaneous."""
    n_control: int
    n_treatment: int
    cuped: bool
    variance_reduction: float
    """1 − SE²(CUPED) / SE²(raw); 0 without CUPED."""


@dataclasses.dataclass(frozen=True)
class Results:
    """The records of one analysis, in metric order, then treatment order."""

    records: tuple[EffectRecord, ...]

    def to_pandas(self) -> pd.DataFrame:
        """One row per record, one column per field."""
        fields = [f.name for f in dataclasses.fields(EffectRecord)]
        return pd.DataFrame([dataclasses.asdict(r) for r in self.records], columns=fields)


@dataclasses.dataclass(frozen=True)
class _Estimate:
    """A per-arm value and its influence values: Var(value) ≈ var(influence, ddof=1) / n."""

    value: float
    influence: np.ndarray

    @property
    def var(self) -> float:
        n = len(self.influence)
        return float(self.influence @ self.influence) / (n - 1) / n


def _estimate(num: np.ndarray, den: np.ndarray | None, what: str) -> _Estimate:
    if den is None:
        value = num.mean()
        return _Estimate(float(value), num - value)
    den_mean = den.mean()
    if den_mean == 0:
        raise ValueError(f"the denominator of {what} averages 0 in an arm; the ratio is undefined")
    value = num.mean() / den_mean
    return _Estimate(float(value), (num - value * den) / den_mean)


def effective_users(
    values: np.ndarray, arm_index: np.ndarray, denominator: np.ndarray | None = None
) -> float:
    """How many users the variance of a metric rests on: Kish's ``(Σ l²)² / Σ l⁴`` of the
    users' influence values ``l`` (per arm, as ``analyse`` uses them: centred for a mean,
    linearised for a ratio), inf if constant.

    n users contributing equally give n; one user carrying all the variance gives 1.
    """
    influence = np.empty(len(values))
    for k in np.unique(arm_index):
        rows = arm_index == k
        den = None if denominator is None else denominator[rows]
        influence[rows] = _estimate(values[rows], den, "effective_users").influence
    squares = influence**2
    total = squares.sum()
    return math.inf if total == 0 else float(total**2 / (squares**2).sum())


def _cuped(
    y: tuple[_Estimate, _Estimate], x: tuple[_Estimate, _Estimate], x_pooled: float
) -> tuple[_Estimate, _Estimate] | None:
    """CUPED-adjusted (control, treatment) estimates, or None if the covariate is constant."""
    sxx = sum(float(e.influence @ e.influence) for e in x)
    if sxx == 0:
        return None
    theta = sum(float(ey.influence @ ex.influence) for ey, ex in zip(y, x, strict=True)) / sxx
    return tuple(
        _Estimate(ey.value - theta * (ex.value - x_pooled), ey.influence - theta * ex.influence)
        for ey, ex in zip(y, x, strict=True)
    )


def _fieller(t: float, c: float, var_t: float, var_c: float, q: float) -> tuple[float, float]:
    """Fieller's interval for t / c (independent t and c); (−inf, inf) unless c is significant."""
    a = c * c - q * q * var_c
    if a <= 0:
        return -math.inf, math.inf
    half = q * math.sqrt(a * var_t + t * t * var_c)
    return (t * c - half) / a, (t * c + half) / a


def _compare(
    name: str,
    control: str,
    treatment: str,
    est: tuple[_Estimate, _Estimate],
    raw_var: float,
    cuped: bool,
    alpha: float,
    lift_ci: str,
) -> dict:
    """Welch test, effect CI and relative-lift CI of one comparison (control, treatment)."""
    (c, t) = est
    n_c, n_t = len(c.influence), len(t.influence)
    var_c, var_t = c.var, t.var
    se2 = var_c + var_t
    effect = t.value - c.value
    nan = math.nan
    if se2 > 0:
        se = math.sqrt(se2)
        df = se2**2 / (var_t**2 / (n_t - 1) + var_c**2 / (n_c - 1))
        q = float(stats.t.ppf(1 - alpha / 2, df))
        pvalue = float(2 * stats.t.sf(abs(effect) / se, df))
        ci = (effect - q * se, effect + q * se)
    else:
        se, q, pvalue, ci = 0.0, nan, nan, (nan, nan)
    rel = t.value / c.value - 1 if c.value != 0 else nan
    if c.value == 0 or se2 == 0:
        rel_ci = (nan, nan)
    elif lift_ci == "fieller":
        lo, hi = _fieller(t.value, c.value, var_t, var_c, q)
        rel_ci = (lo - 1, hi - 1)
    else:
        rel_se = math.sqrt(var_t / c.value**2 + t.value**2 * var_c / c.value**4)
        rel_ci = (rel - q * rel_se, rel + q * rel_se)
    return {
        "metric": name,
        "control": control,
        "treatment": treatment,
        "control_value": c.value,
        "treatment_value": t.value,
        "effect": effect,
        "effect_ci_lower": ci[0],
        "effect_ci_upper": ci[1],
        "std_err": se,
        "rel_effect": rel,
        "rel_ci_lower": rel_ci[0],
        "rel_ci_upper": rel_ci[1],
        "pvalue": pvalue,
        "n_control": n_c,
        "n_treatment": n_t,
        "cuped": cuped,
        "variance_reduction": 1 - se2 / raw_var if cuped and raw_var > 0 else 0.0,
    }


def _column(data: pd.DataFrame, name: str) -> np.ndarray:
    if name not in data.columns:
        raise ValueError(f"unknown metric column {name!r}; columns are {list(data.columns)}")
    col = data[name]
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
        raise ValueError(f"metric column {name!r} must be numeric, got dtype {col.dtype}")
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(values).all():
        raise ValueError(f"metric column {name!r} has NaN or infinite values")
    return values


def _metric_columns(
    data: pd.DataFrame, name: str, metric: Metric, cuped: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(numerator, denominator, covariate numerator, covariate denominator); None where absent."""
    if isinstance(metric, Mean):
        y, d = _column(data, metric.column), None
        cov = None if metric.covariate is None else (metric.covariate, None)
    elif isinstance(metric, Ratio):
        y, d = _column(data, metric.numerator), _column(data, metric.denominator)
        cov = metric.covariate
    else:
        raise ValueError(f"metric {name!r} must be a Mean or a Ratio, got {type(metric).__name__}")
    if not cuped or cov is None:
        return y, d, None, None
    return y, d, _column(data, cov[0]), None if cov[1] is None else _column(data, cov[1])


def _arm_estimates(
    num: np.ndarray, den: np.ndarray | None, pair: tuple[np.ndarray, np.ndarray], what: str
) -> tuple[_Estimate, _Estimate]:
    """(control, treatment) estimates; ``pair`` holds the two arms' row indices."""
    c, t = (_estimate(num[idx], None if den is None else den[idx], what) for idx in pair)
    return c, t


def _check_options(
    data: pd.DataFrame, arm: str, metrics: Mapping[str, Metric], alpha: float, correction: str, lift_ci: str
) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if correction not in ("holm", "bh", "none"):
        raise ValueError(f"correction must be 'holm', 'bh' or 'none', got {correction!r}")
    if lift_ci not in ("delta", "fieller"):
        raise ValueError(f"lift_ci must be 'delta' or 'fieller', got {lift_ci!r}")
    if not metrics:
        raise ValueError("no metrics to analyse")
    if arm not in data.columns:
        raise ValueError(f"unknown arm column {arm!r}; columns are {list(data.columns)}")


def analyse(
    data: pd.DataFrame,
    arm: str,
    control: str,
    metrics: Mapping[str, Metric],
    alpha: float = 0.05,
    correction: Literal["holm", "bh", "none"] = "holm",
    lift_ci: Literal["delta", "fieller"] = "delta",
    cuped: bool = True,
) -> Results:
    """Compare every other arm with ``control`` on every metric.

    ``data`` has one row per user (the randomisation unit), the arm name in column ``arm``
    and the metric columns. Treatments are the other arm names, sorted; records name the
    arms as strings. ``correction`` adjusts the p-values over all metrics × treatments
    (Holm controls the family-wise error, Benjamini–Hochberg the false discovery rate).
    CUPED is applied to metrics that declare a covariate when ``cuped`` is true.
    """
    _check_options(data, arm, metrics, alpha, correction, lift_ci)
    codes, names = pd.factorize(data[arm], sort=True)
    if (codes < 0).any():
        raise ValueError(f"arm column {arm!r} has missing values")
    names = list(names)
    if control not in names:
        raise ValueError(f"unknown control arm {control!r}; arms are {names}")
    sizes = np.bincount(codes, minlength=len(names))
    if len(names) < 2:
        raise ValueError(f"only one arm ({control!r}) in the data; nothing to compare")
    if sizes.min() < 2:
        raise ValueError(f"every arm needs >= 2 users, got {dict(zip(names, sizes.tolist(), strict=True))}")
    rows = [np.flatnonzero(codes == k) for k in range(len(names))]
    c_idx = names.index(control)
    treatments = [k for k in range(len(names)) if k != c_idx]

    records = []
    for name, metric in metrics.items():
        y, d, x, xd = _metric_columns(data, name, metric, cuped)
        for k in treatments:
            pair = (rows[c_idx], rows[k])
            y_est = _arm_estimates(y, d, pair, name)
            raw_var = y_est[0].var + y_est[1].var
            adjusted = None
            if x is not None:
                both = np.concatenate(pair)
                x_pooled = x[both].mean() if xd is None else x[both].sum() / xd[both].sum()
                x_est = _arm_estimates(x, xd, pair, f"{name} covariate")
                adjusted = _cuped(y_est, x_est, float(x_pooled))
            est = y_est if adjusted is None else adjusted
            records.append(
                _compare(
                    name, str(control), str(names[k]), est, raw_var, adjusted is not None, alpha, lift_ci
                )
            )

    return _corrected(records, alpha, correction)


def _corrected(records: list[dict], alpha: float, correction: str) -> Results:
    """The records with p-values adjusted over all of them (``correction``)."""
    pvalues = np.array([r["pvalue"] for r in records])
    adjusted_p = np.full_like(pvalues, np.nan)
    finite = np.isfinite(pvalues)
    adjust = {"holm": holm, "bh": benjamini_hochberg, "none": np.asarray}[correction]
    adjusted_p[finite] = adjust(pvalues[finite])
    return Results(
        tuple(
            EffectRecord(**r, pvalue_adjusted=float(p), significant=bool(p < alpha))
            for r, p in zip(records, adjusted_p, strict=True)
        )
    )


def _check_pvalues(pvalues: ArrayLike) -> np.ndarray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional, got shape {p.shape}")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("pvalues must lie in [0, 1] (no NaN)")
    return p


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in input order.

    With sorted p₍₁₎ ≤ … ≤ p₍ₘ₎: p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎).
    """
    p = _check_pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(pvalues: ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg step-up adjusted p-values (false discovery rate), in input order
    (``scipy.stats.false_discovery_control``).

    With sorted p₍₁₎ ≤ … ≤ p₍ₘ₎: p̃₍ᵢ₎ = min_{j ≥ i} min(1, m p₍ⱼ₎ / j).
    """
    p = _check_pvalues(pvalues)
    return stats.false_discovery_control(p, method="bh") if len(p) else p.copy()


@dataclasses.dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch check: a failed gate means the split itself is broken."""

    chi2: float
    pvalue: float
    passed: bool
    """pvalue >= threshold."""
    threshold: float


def srm_test(counts: Sequence[int], shares: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """χ² goodness-of-fit of the users per arm against the designed shares.

    The threshold is strict (0.001) because the gate runs on every experiment and a false
    alarm stops a healthy one; a real SRM with many users has a tiny p-value anyway.
    """
    n = np.asarray(counts)
    s = np.asarray(shares, dtype=np.float64)
    if n.ndim != 1 or len(n) < 2 or len(n) != len(s):
        raise ValueError(f"need matching counts and shares for >= 2 arms, got {counts} and {shares}")
    if not np.issubdtype(n.dtype, np.integer) or (n < 0).any() or n.sum() == 0:
        raise ValueError(f"counts must be non-negative integers with a positive total, got {counts}")
    if (s <= 0).any() or abs(s.sum() - 1) > 1e-9:
        raise ValueError(f"shares must be > 0 and sum to 1, got {shares}")
    chi2, pvalue = stats.chisquare(n, f_exp=s * n.sum())
    return SRMResult(float(chi2), float(pvalue), bool(pvalue >= threshold), threshold)


def _check_level(alpha: float, power: float) -> None:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")


def mde(std: float, n_per_arm: int | tuple[int, int], alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable absolute effect of a two-sided test (normal approximation).

    ``(z_{1−α/2} + z_{power}) · std · √(1/n_C + 1/n_T)``; ``n_per_arm`` is the users per arm or
    a (n_control, n_treatment) pair, ``std`` the per-user standard deviation of the metric.
    """
    _check_level(alpha, power)
    n_c, n_t = (n_per_arm, n_per_arm) if isinstance(n_per_arm, int | np.integer) else n_per_arm
    if std <= 0 or min(n_c, n_t) < 2:
        raise ValueError(f"need std > 0 and >= 2 users per arm, got {std} and {n_per_arm}")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * std * math.sqrt(1 / n_c + 1 / n_t))


def users_needed(
    baseline_mean: float,
    baseline_std: float,
    relative_lift: float,
    alpha: float = 0.05,
    power: float = 0.8,
    shares: Sequence[float] = (0.5, 0.5),
) -> int:
    """Users entering the experiment so that a ``relative_lift`` is detected with ``power``.

    Two-sided test, normal approximation, equal variance in both arms:
    ``N = (z_{1−α/2} + z_{power})² σ² (1/s_C + 1/s_T) / (lift · mean)²``. ``shares`` are the
    (control, treatment) shares of all users; they may sum to less than 1 when other arms
    run alongside. For uCTR, pass ``baseline_std = √(p(1 − p))``.
    """
    _check_level(alpha, power)
    if len(shares) != 2 or min(shares) <= 0 or sum(shares) > 1 + 1e-9:
        raise ValueError(f"shares must be 2 positive numbers summing to <= 1, got {shares}")
    delta = abs(relative_lift * baseline_mean)
    if baseline_std <= 0 or delta == 0:
        raise ValueError("need baseline_std > 0 and a nonzero relative_lift · baseline_mean")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(z**2 * baseline_std**2 * (1 / shares[0] + 1 / shares[1]) / delta**2)


def mixture_tau(n_planned: int, alpha: float = 0.05) -> float:
    """The ``tau`` for which ``always_valid_ci`` is narrowest at ``n_planned`` users.

    The half-width is ∝ √((1 + 1/r)(2 log(1/α) + log(1 + r))) in r = tau²·n, minimised where
    r = 2 log(1/α) + log(1 + r) (r ≈ 8.2 at α = 0.05), found by fixed-point iteration.
    """
    if n_planned < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_planned >= 1 and alpha in (0, 1), got {n_planned} and {alpha}")
    r = 2 * math.log(1 / alpha)
    for _ in range(100):  # a contraction (derivative 1/(1+r) < 1): converges to machine precision
        r = 2 * math.log(1 / alpha) + math.log1p(r)
    return math.sqrt(r / n_planned)


def always_valid_ci(
    effect: ArrayLike, std_err: ArrayLike, n: ArrayLike, alpha: float = 0.05, tau: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the normal-mixture confidence sequence at each look.

    ``effect`` and ``std_err`` are the cumulative estimate at each look (e.g. ``effect`` and
    ``std_err`` of the daily ``analyse`` records), ``n`` the users in the comparison at that
    look. ``tau`` is the mixture's scale for the standardised effect (module docstring); it
    must be fixed before the first look (see ``mixture_tau``). Valid, like the mSPRT, for an
    asymptotically normal estimate whose per-user variance stays stable over time.
    """
    e, se, n_ = (np.asarray(a, dtype=np.float64) for a in (effect, std_err, n))
    if not 0 < alpha < 1 or tau <= 0:
        raise ValueError(f"need alpha in (0, 1) and tau > 0, got {alpha} and {tau}")
    if (se <= 0).any() or (n_ < 1).any():
        raise ValueError("std_err must be > 0 and n >= 1 at every look")
    r = tau**2 * n_  # τ² / V
    half = se * np.sqrt((1 + 1 / r) * (2 * math.log(1 / alpha) + np.log1p(r)))
    return e - half, e + half


@dataclasses.dataclass(frozen=True)
class PairedLift:
    """Treatment vs control on one metric over the same users (``paired_lift``)."""

    control: float
    """Control mean."""
    trial: float
    """Treatment mean."""
    effect: float
    """trial − control: the mean of the paired differences."""
    effect_lo: float
    effect_hi: float
    lift: float
    """trial / control − 1 (nan when the control mean is 0)."""
    lift_lo: float
    lift_hi: float
    pvalue: float
    """Two-sided paired t on n − 1 degrees of freedom (nan if every pair is equal)."""
    n: int


def paired_lift(control: ArrayLike, trial: ArrayLike, alpha: float = 0.05) -> PairedLift:
    """Paired comparison of per-user values of the same users (in the same order).

    The absolute effect d̄ = mean(t_i − c_i) with the paired t-test (``scipy.stats.ttest_rel``)
    and its Student t interval on n − 1 degrees of freedom; the relative lift r = t̄ / c̄ − 1,
    a ratio of means of paired data, by the delta method: influence values
    l_i = (t_i − (1 + r) c_i) / c̄, SE(r) = s(l) / √n, the same t quantile.
    """
    c, t = np.asarray(control, dtype=np.float64), np.asarray(trial, dtype=np.float64)
    if c.shape != t.shape or c.ndim != 1 or len(c) < 2:
        raise ValueError(f"need two arrays of the same n >= 2 users, got {c.shape} and {t.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n, c_mean, t_mean = len(c), float(c.mean()), float(t.mean())
    q = float(stats.t.ppf(1 - alpha / 2, n - 1))
    diff = t - c
    effect, se_effect = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n))
    lift = t_mean / c_mean - 1 if c_mean != 0 else math.nan
    se_lift = float(((t - (1 + lift) * c) / c_mean).std(ddof=1) / math.sqrt(n)) if c_mean != 0 else math.nan
    pvalue = float(2 * stats.t.sf(abs(effect) / se_effect, n - 1)) if se_effect > 0 else math.nan
    return PairedLift(
        control=c_mean,
        trial=t_mean,
        effect=effect,
        effect_lo=effect - q * se_effect,
        effect_hi=effect + q * se_effect,
        lift=lift,
        lift_lo=lift - q * se_lift,
        lift_hi=lift + q * se_lift,
        pvalue=pvalue,
        n=n,
    )


# --- Interleaving: the per-user preference test of team-draft interleaving -------------------


@dataclasses.dataclass(frozen=True)
class Preference:
    """Treatment vs control in one interleaved experiment (``interleave_test``)."""

    n: int
    """Users."""
    wins: int
    """Users whose treatment credit exceeds their control credit."""
    losses: int
    ties: int
    share: float
    """wins / (wins + losses): the share of non-tied users preferring the treatment (nan if
    all tie); the effect size of the sign test, 1/2 under the null."""
    share_lo: float
    share_hi: float
    """Clopper–Pearson interval of ``share``."""
    sign_pvalue: float
    """Exact two-sided binomial test of ``share`` against 1/2 (1 if every user ties)."""
    difference: float
    """Mean per-user credit difference treatment − control."""
    difference_lo: float
    difference_hi: float
    t_pvalue: float
    """One-sample t-test of the differences (nan if they are all equal)."""


def interleave_test(treatment: ArrayLike, control: ArrayLike, alpha: float = 0.05) -> Preference:
    """The preference test of an interleaved experiment from per-user credits (clicks,
    purchases or GMV credited to the arm that contributed the item).

    Per user i the difference D_i = credit_T − credit_C. Which null is the design's? Team-draft
    draws, per round, the arms' picking order uniformly at random (``policies.interleave``).
    Call the arms *exchangeable* for a user when exchanging their labels leaves the user's
    pages and responses unchanged: in an A/A interleave (one ranking under two labels) or, for
    any arms, when responses do not depend on the items shown. Reversing every round's order
    is a bijection of the coin space preserving its (uniform) measure, and it exchanges the
    labels; under exchangeability it maps D_i to −D_i and leaves |D_i| unchanged. So, given
    |D_1|, ..., |D_n|, the signs of the non-zero D_i are independent fair coins (users' coins
    are keyed by user, so users are independent):

    - sign test: wins ~ Binomial(wins + losses, 1/2) *exactly*, at every n, however skewed
      and tied the credits are. The exact binomial test therefore has size ≤ α (discrete,
      slightly conservative): calibrated. Its effect size is the win share, CI Clopper–Pearson.
    - t-test on D_i: E D = 0 and D is symmetric, so the t statistic is only *asymptotically*
      N(0, 1) (CLT, finite variance); with many ties and a few large credits its level at a
      few hundred users is close to, not exactly, α. It estimates the mean credit difference
      (in clicks per user, comparable with a paired or split test's effect).

    The sign test is thus the calibrated primary test; the t interval states the size of the
    effect. Outside exchangeability the two test different nulls (P(win) = P(loss) against
    E D = 0), which agree for symmetric D. ``tests/abtest/test_interleave.py`` checks the
    false-positive rate of both by A/A simulation.
    """
    t, c = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if t.shape != c.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"need two arrays of the same n >= 2 users, got {t.shape} and {c.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    diff = t - c
    n, wins, losses = len(diff), int((diff > 0).sum()), int((diff < 0).sum())
    if wins + losses:
        test = stats.binomtest(wins, wins + losses, 0.5)
        share, sign_pvalue = wins / (wins + losses), float(test.pvalue)
        ci = test.proportion_ci(confidence_level=1 - alpha, method="exact")
        share_lo, share_hi = float(ci.low), float(ci.high)
    else:
        share, sign_pvalue, share_lo, share_hi = math.nan, 1.0, math.nan, math.nan
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n))
    q = float(stats.t.ppf(1 - alpha / 2, n - 1))
    t_pvalue = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else math.nan
    return Preference(
        n=n,
        wins=wins,
        losses=losses,
        ties=n - wins - losses,
        share=share,
        share_lo=share_lo,
        share_hi=share_hi,
        sign_pvalue=sign_pvalue,
        difference=mean,
        difference_lo=mean - q * se,
        difference_hi=mean + q * se,
        t_pvalue=t_pvalue,
    )


def sign_test_users(win_share: float, tie_share: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users an interleaved experiment needs for its sign test to reach ``power``, given the
    non-tied users' ``win_share`` and the share of tied users (normal approximation of the
    binomial): m = (z_{1−α/2} · ½ + z_{power} · √(p(1 − p)))² / (p − ½)² non-tied users,
    N = m / (1 − tie_share). Accurate from ~150 non-tied users; below, the exact test's
    discreteness and the spread of the non-tied count lose a few points of power."""
    _check_level(alpha, power)
    if not 0 < win_share < 1 or win_share == 0.5 or not 0 <= tie_share < 1:
        raise ValueError(
            f"need win_share in (0, 1) other than 1/2 and tie_share in [0, 1), got {win_share}, {tie_share}"
        )
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    m = (z_a * 0.5 + z_b * math.sqrt(win_share * (1 - win_share))) ** 2 / (win_share - 0.5) ** 2
    return math.ceil(m / (1 - tie_share))


def paired_users_needed(
    mean_difference: float, std_difference: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Users a test on per-user differences (paired design, or interleaving's credit
    differences) needs to detect their mean with ``power`` (two-sided, normal approximation):
    N = (z_{1−α/2} + z_{power})² σ_D² / μ_D²."""
    _check_level(alpha, power)
    if std_difference <= 0 or mean_difference == 0:
        raise ValueError(
            f"need std_difference > 0 and a nonzero mean, got {std_difference}, {mean_difference}"
        )
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(z**2 * std_difference**2 / mean_difference**2)


# ---------------------------------------------------------------------------------------------
# Paired design: every user under every arm (abtest design "paired"), and the true effect


def analyse_paired(
    data: pd.DataFrame,
    arm: str,
    unit: str,
    control: str,
    metrics: Mapping[str, Metric],
    alpha: float = 0.05,
    correction: Literal["holm", "bh", "none"] = "holm",
    lift_ci: Literal["delta", "fieller"] = "delta",
) -> Results:
    """Compare every other arm with ``control`` when every unit ran under every arm.

    ``data`` has one row per (unit, arm). Per arm the estimate and influence values are those
    of ``analyse`` (module docstring), ``v_a`` with ``l_a,i``; pairing user i's values:

    - Effect ``Δ = v_T − v_C``. To first order ``Δ̂ − Δ ≈ mean_i(l_T,i − l_C,i)``, so
      ``SE² = s²(l_T − l_C) / n`` over the n users, on Student's t with n − 1 df. For a Mean,
      ``l_T,i − l_C,i = (y_T,i − y_C,i) − mean``: exactly the paired t-test
      (``scipy.stats.ttest_rel``). For a Ratio this is the paired delta method: with
      ``l_a,i = (y_a,i − v_a d_a,i) / d̄_a`` the variance is ``V_T + V_C − 2 Cov``, the
      covariance of a user's two arms entering through the per-user difference.
    - Relative lift ``r = v_T / v_C − 1``: delta method on the per-user linearisation
      ``l_r,i = l_T,i / v_C − v_T l_C,i / v_C²``, ``SE(r) = s(l_r) / √n``; or Fieller with the
      covariance, ``{ρ : (v_T − ρ v_C)² ≤ q² (V_T − 2ρ C + ρ² V_C)}``.

    No CUPED: a pre-period covariate is the same for both arms of a user, so its part of the
    outcome cancels in the difference already (covariates are ignored). ``n_control`` =
    ``n_treatment`` = n users. When every user's difference is the same (SE = 0, e.g. an A/A
    run, whose arms are identical) the interval is that one point and the p-value 1 (no
    difference) or 0.
    """
    _check_options(data, arm, metrics, alpha, correction, lift_ci)
    if unit not in data.columns:
        raise ValueError(f"unknown unit column {unit!r}; columns are {list(data.columns)}")
    names = sorted(pd.unique(data[arm]).tolist())
    if control not in names:
        raise ValueError(f"unknown control arm {control!r}; arms are {names}")
    if len(names) < 2:
        raise ValueError(f"only one arm ({control!r}) in the data; nothing to compare")
    ordered = data.sort_values([arm, unit], kind="stable")
    rows = {name: np.flatnonzero(ordered[arm].to_numpy() == name) for name in names}
    units = {name: ordered[unit].to_numpy()[idx] for name, idx in rows.items()}
    for name in names:
        if not np.array_equal(units[name], units[control]):
            raise ValueError(f"arm {name!r} does not hold the same units, once each, as {control!r}")
    n = len(units[control])
    if n < 2:
        raise ValueError(f"need >= 2 units under every arm, got {n}")
    records = []
    for name, metric in metrics.items():
        y, d, _, _ = _metric_columns(ordered, name, metric, cuped=False)
        c = _estimate(y[rows[control]], None if d is None else d[rows[control]], name)
        for treatment in (a for a in names if a != control):
            idx = rows[treatment]
            t = _estimate(y[idx], None if d is None else d[idx], name)
            records.append(_compare_paired(name, control, treatment, c, t, alpha, lift_ci))
    return _corrected(records, alpha, correction)


def analyse_interleaved(
    data: pd.DataFrame,
    arm: str,
    unit: str,
    control: str,
    metrics: Mapping[str, Metric],
    alpha: float = 0.05,
    correction: Literal["holm", "bh", "none"] = "holm",
    lift_ci: Literal["delta", "fieller"] = "delta",
) -> Results:
    """Compare every other arm's credit with ``control``'s in an interleaved experiment.

    ``data`` has one row per (unit, arm): the clicks, purchases, GMV ... credited to that arm
    (``abtest.interleave``). Every unit saw every arm's items on the same pages, so the
    estimates, intervals and relative lift are those of ``analyse_paired`` on the credits (the
    mean credit difference, paired t interval; the lift is the ratio of mean credits, not an
    A/B lift), but the p-value is the exact sign test of the per-unit differences
    (``interleave_test``): calibrated at every n under the design's null, where the t-test is
    only asymptotically so. Means only: a ratio's per-unit linearisation depends on both arms'
    estimates, so its sign is not exchangeable under the null.
    """
    ratios = [name for name, m in metrics.items() if isinstance(m, Ratio)]
    if ratios:
        raise ValueError(f"interleaving tests per-user credits (means); ratio metrics {ratios}")
    paired = analyse_paired(data, arm, unit, control, metrics, alpha, "none", lift_ci)
    ordered = data.sort_values([arm, unit], kind="stable")
    records = []
    for r in paired.records:
        column = metrics[r.metric].column

        def credit(name: str, column: str = column) -> np.ndarray:
            return ordered.loc[ordered[arm] == name, column].to_numpy(np.float64)

        preference = interleave_test(credit(r.treatment), credit(r.control), alpha)
        record = dataclasses.asdict(r)
        del record["pvalue_adjusted"], record["significant"]
        records.append(record | {"pvalue": preference.sign_pvalue})
    return _corrected(records, alpha, correction)


def _compare_paired(
    name: str, control: str, treatment: str, c: _Estimate, t: _Estimate, alpha: float, lift_ci: str
) -> dict:
    """Paired t test, effect CI and relative-lift CI of one comparison (``analyse_paired``)."""
    n, nan = len(c.influence), math.nan
    q = float(stats.t.ppf(1 - alpha / 2, n - 1))
    effect = t.value - c.value
    se = float(np.std(t.influence - c.influence, ddof=1) / math.sqrt(n))
    if se > 0:
        pvalue = float(2 * stats.t.sf(abs(effect) / se, n - 1))
        ci = (effect - q * se, effect + q * se)
    else:  # every user's difference is the same: the effect on these users is known exactly
        pvalue, ci = (1.0 if effect == 0 else 0.0), (effect, effect)
    rel = t.value / c.value - 1 if c.value != 0 else nan
    if c.value == 0:
        rel_ci = (nan, nan)
    elif se == 0:
        rel_ci = (rel, rel)
    elif lift_ci == "fieller":
        var_t, var_c = t.var, c.var
        cov = float(t.influence @ c.influence) / (n - 1) / n
        a = c.value**2 - q * q * var_c
        b = t.value * c.value - q * q * cov
        disc = b * b - a * (t.value**2 - q * q * var_t)
        if a <= 0 or disc < 0:
            rel_ci = (-math.inf, math.inf)
        else:
            rel_ci = ((b - math.sqrt(disc)) / a - 1, (b + math.sqrt(disc)) / a - 1)
    else:
        lin = t.influence / c.value - t.value * c.influence / c.value**2
        rel_se = float(np.std(lin, ddof=1) / math.sqrt(n))
        rel_ci = (rel - q * rel_se, rel + q * rel_se)
    return {
        "metric": name,
        "control": control,
        "treatment": treatment,
        "control_value": c.value,
        "treatment_value": t.value,
        "effect": effect,
        "effect_ci_lower": ci[0],
        "effect_ci_upper": ci[1],
        "std_err": se,
        "rel_effect": rel,
        "rel_ci_lower": rel_ci[0],
        "rel_ci_upper": rel_ci[1],
        "pvalue": pvalue,
        "n_control": n,
        "n_treatment": n,
        "cuped": False,
        "variance_reduction": 0.0,
    }


def per_user_std(values: ArrayLike, denominator: ArrayLike | None = None) -> float:
    """Per-user standard deviation of one arm's metric: of its values (a mean) or of their
    delta-method linearisation ``(y − v d) / d̄`` (a ratio), ddof = 1. The split-design
    variance of a paired run is the mean of its arms' ``per_user_std²``."""
    y = np.asarray(values, dtype=np.float64)
    d = None if denominator is None else np.asarray(denominator, dtype=np.float64)
    return float(np.std(_estimate(y, d, "per_user_std").influence, ddof=1))


def metric_value(values: ArrayLike, denominator: ArrayLike | None = None) -> float:
    """One arm's metric value: the mean of ``values`` or the ratio of means (nan if d̄ = 0);
    the true effect is the difference of these over the same users under two arms."""
    y = np.asarray(values, dtype=np.float64)
    if denominator is None:
        return _estimate(y, None, "metric_value").value
    d = np.asarray(denominator, dtype=np.float64)
    return math.nan if d.mean() == 0 else _estimate(y, d, "metric_value").value


def paired_mde(std_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable absolute effect of a paired design: ``(z_{1−α/2} + z_{power}) ·
    std_diff / √n``, ``std_diff`` the per-user standard deviation of the paired difference."""
    _check_level(alpha, power)
    if std_diff <= 0 or n < 2:
        raise ValueError(f"need std_diff > 0 and >= 2 users, got {std_diff} and {n}")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * std_diff / math.sqrt(n))
