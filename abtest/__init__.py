"""Trustworthy A/B statistics: assignment, per-user metrics, tests, SRM, power, sequential CIs."""

from abtest.stats import (
    EffectRecord,
    Mean,
    Metric,
    PairedLift,
    Ratio,
    Results,
    SRMResult,
    always_valid_ci,
    analyse,
    benjamini_hochberg,
    effective_users,
    holm,
    mde,
    mixture_tau,
    paired_lift,
    srm_test,
    users_needed,
)
from common.assignment import Assignment, user_buckets

__all__ = [
    "Assignment",
    "EffectRecord",
    "Mean",
    "Metric",
    "PairedLift",
    "Ratio",
    "Results",
    "SRMResult",
    "always_valid_ci",
    "analyse",
    "benjamini_hochberg",
    "effective_users",
    "holm",
    "mde",
    "mixture_tau",
    "paired_lift",
    "srm_test",
    "user_buckets",
    "users_needed",
]
