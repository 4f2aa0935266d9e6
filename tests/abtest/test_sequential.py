"""Always-valid confidence sequences for daily peeking.

Under the null, R experiments are followed for D daily looks each. A fixed-horizon 95 % CI
read every day excludes 0 at some look far more often than 5 %; the confidence sequence
must keep that rate at most α. The crossing rate is Binomial(R, q)/R, so a rate at most
α + 3.09·√(α(1−α)/R) (one-sided 99.9 %) is consistent with q ≤ α.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from abtest import always_valid_ci, mixture_tau

ALPHA = 0.05
R, DAYS, PER_DAY = 2000, 20, 100  # experiments, looks, new users per arm per day


def null_experiments(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(effect, std_err, n) of shape (R, DAYS) for Welch comparisons of N(0, 1) arms.

    Daily sums and within-day sums of squares are drawn from their exact distributions
    (N(0, m) and χ²(m − 1)) instead of drawing every user.
    """
    m = PER_DAY
    sums = rng.normal(0.0, math.sqrt(m), (2, R, DAYS))
    squares = rng.chisquare(m - 1, (2, R, DAYS)) + sums**2 / m
    n = m * np.arange(1, DAYS + 1)
    s, q = sums.cumsum(-1), squares.cumsum(-1)
    var = (q - s**2 / n) / (n - 1)
    effect = s[1] / n - s[0] / n
    std_err = np.sqrt(var[0] / n + var[1] / n)
    return effect, std_err, np.broadcast_to(2 * n, effect.shape)


def test_confidence_sequence_controls_the_crossing_rate_under_peeking() -> None:
    effect, std_err, n = null_experiments(np.random.default_rng(0))
    tolerance = 3.09 * math.sqrt(ALPHA * (1 - ALPHA) / R)
    lower, upper = always_valid_ci(effect, std_err, n, ALPHA, tau=mixture_tau(2 * PER_DAY * DAYS, ALPHA))
    always_valid_rate = ((lower > 0) | (upper < 0)).any(axis=1).mean()
    assert always_valid_rate <= ALPHA + tolerance
    naive_rate = (np.abs(effect / std_err) > 1.959964).any(axis=1).mean()
    assert naive_rate > ALPHA + tolerance


def test_confidence_sequence_is_wider_than_the_fixed_horizon_interval() -> None:
    lower, upper = always_valid_ci(np.zeros(3), np.ones(3), [10, 1000, 100_000], ALPHA, tau=0.01)
    assert (upper > 1.959964).all() and np.allclose(lower, -upper)


def test_mixture_tau_minimises_the_width_at_the_planned_size() -> None:
    n, sigma = 50_000, 2.0  # std_err = sigma / √n at the planned size
    tau = mixture_tau(n, ALPHA)

    def width(t: float) -> float:
        lo, hi = always_valid_ci(0.0, sigma / math.sqrt(n), n, ALPHA, tau=t)
        return float(hi - lo)

    assert width(tau) < width(tau * 1.1) and width(tau) < width(tau / 1.1)
    # At α = 0.05 the optimum is r = tau²·n ≈ 8.2.
    assert tau**2 * n == pytest.approx(8.2, abs=0.05)


@pytest.mark.parametrize(
    "call",
    [
        lambda: always_valid_ci(0.0, 0.0, 100),
        lambda: always_valid_ci(0.0, 1.0, 0),
        lambda: always_valid_ci(0.0, 1.0, 100, tau=0.0),
        lambda: mixture_tau(0),
    ],
)
def test_invalid_input_is_rejected(call) -> None:
    with pytest.raises(ValueError):
        call()
