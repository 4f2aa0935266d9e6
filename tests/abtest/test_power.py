"""Sample size and minimum detectable effect (two-sided, normal approximation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abtest import mde, users_needed

Z999 = 3.29  # two-sided 99.9 % normal quantile


def test_users_needed_known_value() -> None:
    # uCTR 0.5 (sd 0.5), +1 % relative: δ = 0.005, (z₀.₉₇₅ + z₀.₈)² = 2.80158² = 7.84888,
    # N = 7.84888 · 0.25 · (2 + 2) / 0.005² = 313,955.2 → 313,956 users in total.
    assert users_needed(0.5, 0.5, 0.01) == 313_956


def test_mde_at_users_needed_is_the_planned_effect() -> None:
    n = users_needed(0.3, 0.46, 0.02, shares=(0.25, 0.75))
    assert mde(0.46, (round(0.25 * n), round(0.75 * n))) == pytest.approx(0.3 * 0.02, rel=1e-3)
    # Unequal splits need more users than a 50/50 split for the same effect.
    assert n > users_needed(0.3, 0.46, 0.02)


def test_users_needed_reaches_the_planned_power_for_a_binary_metric() -> None:
    p, lift, reps = 0.3, 0.05, 4000
    n = users_needed(p, math.sqrt(p * (1 - p)), lift)
    rng = np.random.default_rng(0)
    x_c = rng.binomial(n // 2, p, reps) / (n // 2)
    x_t = rng.binomial(n // 2, p * (1 + lift), reps) / (n // 2)
    z = (x_t - x_c) / np.sqrt((x_c * (1 - x_c) + x_t * (1 - x_t)) / (n // 2))
    power = (np.abs(z) > 1.959964).mean()
    # Power ~ Binomial(R, 0.8)/R: 0.8 ± 3.29·√(0.16/4000) = 0.8 ± 0.021. The formula takes the
    # baseline variance for both arms; the treatment's is p'(1 − p') = 0.2158 for 0.21, which
    # widens the SE by √(0.4258/0.42) = 1.007 and lowers the power to Φ(2.8016/1.007 − 1.96) =
    # 0.795: a further 0.006 allowance.
    assert power == pytest.approx(0.8, abs=Z999 * math.sqrt(0.16 / reps) + 0.006)


@pytest.mark.parametrize(
    "call",
    [
        lambda: users_needed(0.5, 0.5, 0.0),
        lambda: users_needed(0.5, 0.0, 0.01),
        lambda: users_needed(0.5, 0.5, 0.01, shares=(0.6, 0.6)),
        lambda: users_needed(0.5, 0.5, 0.01, alpha=0.0),
        lambda: mde(1.0, 1),
        lambda: mde(-1.0, 100),
        lambda: mde(1.0, 100, power=1.0),
    ],
)
def test_invalid_input_is_rejected(call) -> None:
    with pytest.raises(ValueError):
        call()
