"""Coarse-ranker inference cost: one request, 5,000 candidates, item tower precomputed.

Prints the median and p99 of `CoarseRanker.score` (plus `encode_user`) per configuration,
and ms per 1,000 candidates, at the default world's vocabulary (untrained weights: the
cost does not depend on their values).

    .venv/bin/python benchmarks/bench_coarse_scoring.py [--candidates N] [--threads T]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from policies.batch import ItemFeatures, UserFeatures
from policies.models import CoarseConfig, CoarseRanker, Similarity, Vocab
from simulator.config import WorldConfig

CONFIGS = {
    "DSSM (dot)": CoarseConfig(),
    "DSSM (cosine)": CoarseConfig(similarity=Similarity.COSINE),
    "+ MLP scorer": CoarseConfig(mlp_scorer=True),
    "+ FM cross": CoarseConfig(fm_cross=True),
    "+ NOVA": CoarseConfig(nova=True),
    "+ SENET/bilinear": CoarseConfig(senet_bilinear=True),
    "full": CoarseConfig(mlp_scorer=True, fm_cross=True, nova=True, senet_bilinear=True),
}


def _items(vocab: Vocab, shape: tuple[int, ...], gen: torch.Generator) -> ItemFeatures:
    def draw(high: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=gen)

    return ItemFeatures(
        item_id=draw(vocab.n_items),
        category=draw(vocab.n_categories),
        brand=draw(vocab.n_brands),
        price_bucket=draw(vocab.n_price_buckets),
        is_new=(draw(20) == 0).float(),
    )


def time_config(
    config: CoarseConfig, vocab: Vocab, n_candidates: int, history_len: int, repeats: int
) -> tuple[float, float]:
    model = CoarseRanker(config, vocab, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    user = UserFeatures(user_id=torch.tensor([3]), history=_items(vocab, (1, history_len), gen))
    with torch.inference_mode():
        item_vecs = model.encode_items(_items(vocab, (n_candidates,), gen))  # precomputed offline
        seconds = []
        for _ in range(repeats + 10):
            start = time.perf_counter()
            model.score(model.encode_user(user), item_vecs)
            seconds.append(time.perf_counter() - start)
    ms = np.array(seconds[10:]) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w = WorldConfig()
    vocab = Vocab(
        n_items=w.n_items,
        n_users=w.n_users,
        n_categories=w.n_categories,
        n_brands=w.n_categories * w.brands_per_category,
    )
    print(f"{args.candidates} candidates, batch of 1 request, {args.threads} threads")
    print(f"{'config':<20}{'median ms':>11}{'p99 ms':>9}{'ms/1k cand.':>13}")
    for name, config in CONFIGS.items():
        median, p99 = time_config(config, vocab, args.candidates, w.history_len, args.repeats)
        print(f"{name:<20}{median:>11.3f}{p99:>9.3f}{median * 1000 / args.candidates:>13.3f}")
    print("target: full model <= 5 ms for 5,000 candidates")


if __name__ == "__main__":
    main()
