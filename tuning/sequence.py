"""What the behaviour sequence is worth to a coarse ranker, and what denoising it could win.

    python -m tuning.sequence                     # the +fm rung of the ladder, feed world
    python -m tuning.sequence --rungs +fm +nova --histories denoised shuffled
    python -m tuning.sequence --help

A ladder rung (``tuning.ladder.STEPS``) is trained on the logged histories and again on altered
ones, and both are scored on the same held-out rows (the ladder's bench: same users, samples
and clicks), each reading its own kind of history; the paired GAUC difference has an interval
over users (``policies.metrics.gauc_difference``). Alterations (``ALTERATIONS``):

- ``denoised``: every accidental behaviour (known only to the world) replaced by the user's
  previous clean one (the first clean one before any), its dwell with it: perfect denoising,
  the most NOVA's attention could recover;
- ``shuffled``: every user gets another user's history: what the sequence carries at all.

For a rung with NOVA the table also gives the attention its logged model pays an accidental
behaviour against a clean one (``attention_on_accidental``: below 1, it filters the noise).

A distilled rung's teacher reads the same altered histories. The logged rung is cached as the
ladder caches it (``<out>/<rung>.pt``: ``--out runs/ladder`` reuses a ladder's checkpoints); an
altered rung is always trained afresh (``<out>/<rung>-<alteration>.pt``). The table goes to
``<out>/sequence.{md,csv}``.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command parses its arguments before torch and pandas are imported
    from tuning.sequence_cli import main

    raise SystemExit(main())

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from policies.config import dwell_buckets, read_raw
from policies.data import LogData
from policies.evaluate import ClickRows
from policies.features import FeatureStore
from policies.models import CoarseRanker, _history_mask
from policies.rankers import load_scorer
from policies.train import ensure_trained, parse_config, train
from simulator.config import load_world_config
from tuning.ladder import STEPS, Bench, ladder_configs, override_training

ALTERATIONS = ("denoised", "shuffled")


def denoising_source(clean: np.ndarray) -> np.ndarray:
    """Per history slot (U, H), the slot whose behaviour replaces it: itself if clean, else the
    latest clean slot before it, else the first clean slot (a user without any keeps all)."""
    positions = np.arange(clean.shape[1])
    latest = np.maximum.accumulate(np.where(clean, positions, -1), axis=1)  # (U, H), -1: none yet
    first = np.where(clean.any(axis=1), clean.argmax(axis=1), -1)[:, None]  # (U, 1)
    source = np.where(latest >= 0, latest, first)
    return np.where(source >= 0, source, positions)


def altered(data: LogData, clean: np.ndarray, alteration: str, seed: int = 0) -> LogData:
    """``data`` with its histories (and dwell) altered; ``clean`` (U, H) is the world's
    ``history_clean`` of the logged users (rows = user ids)."""
    n = data.history.shape[0]
    if alteration == "denoised":
        source = torch.as_tensor(denoising_source(clean[:n]))
        take = lambda table: torch.take_along_dim(table, source, dim=1)  # noqa: E731
    elif alteration == "shuffled":
        order = torch.as_tensor(np.random.default_rng(seed).permutation(n))
        take = lambda table: table[order]  # noqa: E731
    else:
        raise ValueError(f"unknown alteration {alteration!r}: one of {', '.join(ALTERATIONS)}")
    dwell = None if data.history_dwell is None else take(data.history_dwell)
    return dataclasses.replace(data, history=take(data.history), history_dwell=dwell)


def attention_on_accidental(model: CoarseRanker, features: FeatureStore, clean: np.ndarray, users) -> float:
    """NOVA's attention an accidental behaviour receives (averaged over the queries) over what a
    clean one receives, over ``users``' histories (``clean`` the world's ``history_clean``): 1 =
    no discounting, below 1 = NOVA filters the noise; NaN for a model without NOVA."""
    if model.nova is None:
        return float("nan")
    user = features.users(np.asarray(users))
    mask = _history_mask(user.history)
    with torch.no_grad():
        side = model.nova_side(user, model.embed(user.history))
        _, received = model.nova(side, model.embed.ids(user.history), mask)  # share (B, H)
        received = received.numpy()
    real = mask.numpy()
    accidental = ~clean[np.asarray(users)] & real
    return float(received[accidental].mean() / received[~accidental & real].mean())


def run_sequence(args: argparse.Namespace, log=print) -> pd.DataFrame:
    unknown = [r for r in args.rungs if r not in dict(STEPS)]
    if unknown:
        raise ValueError(f"unknown rung(s) {unknown}: one of {', '.join(name for name, _ in STEPS)}")
    out = Path(args.out)
    base = read_raw(args.base)
    world_config = load_world_config(parse_config(base, "the base config").data.world)
    configs = ladder_configs(base, args.fine, out, dwell_buckets(world_config))
    override_training(configs, args.epochs, args.train_seed)
    runs = {name: parse_config(configs[name], f"ladder rung {name}") for name in args.rungs}
    bench = Bench.build(
        next(iter(runs.values())), args.fine, args.coarse_size, args.eval_sessions, 0, args.progress, log
    )
    data, clean = bench.eval_set.data, bench.world.history_clean
    rows, table = ClickRows(bench.eval_set), []
    for name, run in runs.items():
        start = time.perf_counter()
        path = ensure_trained(run, progress=args.progress, log=log)
        scorer = load_scorer(str(path), bench.world, bench.features, "coarse")
        logged = rows.evaluate(name, scorer)
        attention = attention_on_accidental(scorer.model, bench.features, clean, bench.split.eval_users)
        table.append(
            {
                "rung": name,
                "histories": "logged",
                "gauc": logged["gauc"],
                "auc": logged["auc"],
                "NOVA attention accidental / clean": attention,
            }
        )
        for alteration in args.histories:
            changed = altered(data, clean, alteration, seed=args.train_seed or 0)
            altered_run = dataclasses.replace(run, out=str(out / f"{name.lstrip('+')}-{alteration}.pt"))
            log(f"training {name} on {alteration} histories -> {altered_run.out}")
            result = train(altered_run, data=changed, progress=args.progress, log=log)
            side = ClickRows(dataclasses.replace(bench.eval_set, data=changed))
            model = load_scorer(altered_run.out, bench.world, bench.features, "coarse")
            metrics = side.evaluate(alteration, model)
            if not (np.array_equal(side.users, rows.users) and np.array_equal(side.clicks, rows.clicks)):
                raise RuntimeError("the altered evaluation rows differ from the logged ones")
            rows.scores[f"{name} {alteration}"] = side.scores[alteration]
            difference, half_width = rows.gauc_difference(f"{name} {alteration}", name)
            table.append(
                {
                    "rung": name,
                    "histories": alteration,
                    "gauc": metrics["gauc"],
                    "auc": metrics["auc"],
                    "ΔGAUC ‰ vs logged": difference,
                    "ΔGAUC ±95% ‰": half_width,
                    "train_s": result.seconds,
                }
            )
        log(f"{name}: done in {time.perf_counter() - start:.0f} s")
    frame = pd.DataFrame(table)
    frame.attrs["caption"] = (
        f"{len(bench.split.eval_users)} held-out users of {data.history.shape[0]} logged; every row "
        "scored on the same exposed samples, each model reading its own kind of history; Δ = paired "
        "GAUC difference to the rung on logged histories ± 95 % over users."
    )
    return frame
