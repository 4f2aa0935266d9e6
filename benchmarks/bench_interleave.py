"""Sensitivity of interleaving against a split and a paired test: users needed for power 0.8
(α 0.05) to detect the difference between two coarse rankers on clicks.

    .venv/bin/python benchmarks/bench_interleave.py [--world small] [--users 2000] [--days 1]
        [--control popularity] [--treatment oracle] [--fine oracle] [--coarse-size 50]

Method (printed with the figures). The same users and days run three ways on the world's
common random numbers: through the control's cascade, through the treatment's, and on the
team-draft interleaving of both (``abtest.interleave``). From per-user values:
- split: half the users per arm, Welch on clicks per user: N = z² σ² (1/½ + 1/½) / Δ², σ² the
  mean of the two arms' variances, Δ the difference of their means (``users_needed``);
- paired: every user through both arms, t on the per-user differences: N = z² σ_d² / Δ²
  (``paired_users_needed``);
- interleave: t on the per-user credit differences (same formula on D), and the sign test on
  the preferences (``sign_test_users``, from the win share and the tie share).
z = z_{0.975} + z_{0.8}. The designs estimate different quantities (a lift in clicks, a mean
credit difference, a win share); each N is what its own test needs to detect its own effect,
the usual comparison of interleaving with A/B tests (Chapelle et al. 2012). A specs is a
baseline name or a checkpoint path (a checkpoint of another world is refused).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from abtest.interleave import run_interleaved, user_credit
from abtest.stats import interleave_test, paired_users_needed, sign_test_users, users_needed
from policies.cascade import Cascade, CascadeSizes, run_sessions
from policies.features import FeatureStore
from policies.rankers import load_scorer
from simulator.config import load_world_config
from simulator.recall import SessionKeys
from simulator.session import Simulator
from simulator.world import World


def per_user(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Session values summed per user (users 0..n-1)."""
    return np.bincount(users, values, minlength=users.max() + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="small")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--control", default="popularity")
    parser.add_argument("--treatment", default="oracle")
    parser.add_argument("--fine", default="oracle")
    parser.add_argument("--coarse-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="seed of the interleaving's picking order")
    args = parser.parse_args()

    world = World(load_world_config(args.world))
    sim = Simulator(world)
    features = FeatureStore.from_world(world)
    sizes = CascadeSizes(coarse=args.coarse_size, page=world.config.page_size)
    fine = load_scorer(args.fine, world, features, "fine")
    arms = {
        name: Cascade(load_scorer(spec, world, features, "coarse"), fine, sizes)
        for name, spec in (("control", args.control), ("treatment", args.treatment))
    }
    n = min(args.users, world.config.n_users)
    users = np.tile(np.arange(n, dtype=np.int64), args.days)
    keys = SessionKeys.of(users, day=np.repeat(np.arange(args.days), n) + 100)  # fresh days, after the logs

    seconds, clicks = {}, {}
    for name, cascade in arms.items():
        t = time.perf_counter()
        clicks[name] = per_user(run_sessions(sim, cascade, keys).totals.clicks, users)
        seconds[name] = time.perf_counter() - t
    t = time.perf_counter()
    credit = user_credit(run_interleaved(sim, arms, keys, args.seed))
    seconds["interleave"] = time.perf_counter() - t

    c, tr = clicks["control"], clicks["treatment"]
    diff = tr - c
    sigma = float(np.sqrt((c.var(ddof=1) + tr.var(ddof=1)) / 2))
    lift = tr.mean() / c.mean() - 1
    pref = interleave_test(credit["clicks_treatment"], credit["clicks_control"])
    d = credit["clicks_treatment"].to_numpy() - credit["clicks_control"].to_numpy()
    n_split = users_needed(c.mean(), sigma, lift)
    n_paired = paired_users_needed(diff.mean(), diff.std(ddof=1))
    n_il_t = paired_users_needed(d.mean(), d.std(ddof=1))
    n_il_sign = sign_test_users(pref.share, pref.ties / pref.n)

    print(f"world {args.world}: {n} users x {args.days} day(s); coarse {args.control} vs {args.treatment}")
    print(f"  (coarse cut {args.coarse_size}, fine {args.fine}); power 0.8, alpha 0.05, clicks per user")
    print(
        f"  clicks/user control {c.mean():.3f} (sd {c.std(ddof=1):.3f}), treatment {tr.mean():.3f} "
        f"(sd {tr.std(ddof=1):.3f}): lift {lift:+.2%}"
    )
    print(
        f"  interleave: credit/user control {credit['clicks_control'].mean():.3f}, treatment "
        f"{credit['clicks_treatment'].mean():.3f}; wins {pref.wins}, losses {pref.losses}, ties {pref.ties} "
        f"(share {pref.share:.3f} [{pref.share_lo:.3f}, {pref.share_hi:.3f}]), D = {pref.difference:+.3f} "
        f"[{pref.difference_lo:+.3f}, {pref.difference_hi:+.3f}]"
    )
    rows = [
        ("split (Welch, clicks)", n_split, n_split * seconds["control"] / n),
        ("paired (t on differences)", n_paired, n_paired * (seconds["control"] + seconds["treatment"]) / n),
        ("interleave (t on credit)", n_il_t, n_il_t * seconds["interleave"] / n),
        ("interleave (sign test)", n_il_sign, n_il_sign * seconds["interleave"] / n),
    ]
    print(f"  {'design':28s} {'users needed':>12s} {'x split':>8s} {'traffic s':>10s}")
    for name, needed, secs in rows:
        print(f"  {name:28s} {needed:12,d} {n_split / needed:8.1f} {secs:10.2f}")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    print(f"  simulation: {timing} for {n * args.days:,} sessions")


if __name__ == "__main__":
    main()
