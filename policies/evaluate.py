"""Offline evaluation: metrics of a model over held-out logged lists (``list_metrics``, which
training prints after every epoch, with the teacher's outputs from ``teacher_outputs``), and of
coarse rankers against what only the simulator knows (recall sets, out-of-scene purchases, the
oracle's best items).

``EvalSet.build`` fixes everything that does not depend on the coarse model, once: held-out
users' logged sessions, their recall sets regenerated from the world (recall is a pure
function of (user, day, session)), the teacher's scores over each recall set, in-scene
purchases (logged) and out-of-scene purchases (the world's) of that user-day, and the
oracle's truly best items. ``evaluate_coarse`` then scores a model against it.

Metrics (k = the coarse cut C unless stated):

- ``auc``, ``gauc``: click labels of held-out exposed samples (GAUC weights users by their
  exposures, skipping users with only one class; see ``policies.metrics.gauc``);
- ``ndcg@10``, ``kendall_tau``: agreement with the teacher within held-out logged lists;
- ``recall@10@C``: share of the teacher's top-10 of the whole recall set kept in the coarse
  top-C (COLD's recall@k@m);
- ``hitrate_in@C``, ``hitrate_out@C``, ``hitrate_global@C``: share of the session's in-scene
  purchases / the user-day's out-of-scene purchases / both that the coarse top-C of the recall
  set contains (seed 002's global hitrate);
- ``funnel_*``: share of each user's ``funnel_k`` truly best items (expected clicks, whole
  pool) lost at recall, at the coarse cut and at the fine cut (teacher top-K of the coarse
  top-C), and the share kept on the page.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from policies import metrics
from policies.batch import ListBatch
from policies.cascade import Cascade, CascadeSizes
from policies.data import EXPOSED, Lists, LogData, LogSplit, SampleSpace, make_batch
from policies.models import FineRanker
from policies.rankers import CoarseModelScorer, FineModelScorer, Scorer
from simulator.logs import out_of_scene_purchases
from simulator.oracle import best_in_pool, funnel_loss
from simulator.recall import Recall, SessionKeys
from simulator.world import World

EVAL_SPACE = SampleSpace(unexposed=True, dropped=True, random=True, out_of_scene=False)
"""The logged lists every model is evaluated on, whatever it was trained on."""


def held_out_list_ids(lists: Lists, users: np.ndarray, n: int, day: int | None = None) -> np.ndarray:
    """The first ``n`` lists of ``users`` (a fixed subset; every user's lists stay together), of
    ``day`` only if given (a time split's evaluation day)."""
    keep = np.isin(lists.user_id, users)
    if day is not None:
        keep &= lists.day == day
    return np.flatnonzero(keep)[:n]


def validation_list_ids(lists: Lists, split: LogSplit, n: int) -> np.ndarray:
    """The first ``n`` lists of ``split``'s validation users, before its evaluation day for a
    time split: the lists that choose the epoch."""
    keep = np.isin(lists.user_id, split.validation_users)
    if split.eval_day is not None:
        keep &= lists.day < split.eval_day
    return np.flatnonzero(keep)[:n]


def _pad(x: torch.Tensor, width: int, fill: float | bool) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)


def list_metrics(
    data: LogData,
    space: SampleSpace,
    list_ids: np.ndarray,
    score: Callable[[ListBatch], torch.Tensor],
    teacher_pctr: torch.Tensor | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Offline metrics of ``score(batch) -> (B, L)`` over lists ``list_ids``: click AUC and
    GAUC on exposed samples and, given the teacher's pCTR per list entry (E,), NDCG@10, Kendall
    tau and recall@10@30 against the teacher within each list (all its samples)."""
    return _list_metrics(data, space, list_ids, score, teacher_pctr, batch_size)[0]


@torch.no_grad()
def _list_metrics(
    data: LogData,
    space: SampleSpace,
    list_ids: np.ndarray,
    score: Callable[[ListBatch], torch.Tensor],
    teacher_pctr: torch.Tensor | None,
    batch_size: int,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``list_metrics`` and the rows its AUC and GAUC are computed on: (user, click, score) of
    every exposed sample, in an order that does not depend on ``score``."""
    lists = data.lists(space)
    width = int((lists.offsets[1:] - lists.offsets[:-1])[list_ids].max()) if len(list_ids) else 1
    users, labels, scores, ref, student, masks = [], [], [], [], [], []
    for lo in range(0, len(list_ids), batch_size):
        ids = list_ids[lo : lo + batch_size]
        batch = make_batch(data, lists, ids)
        s = score(batch).float()  # (B, L)
        exposed = (batch.sample_type == EXPOSED) & batch.mask
        users.append(batch.user.user_id[:, None].expand_as(exposed)[exposed])
        labels.append(batch.click[exposed])
        scores.append(s[exposed])
        if teacher_pctr is not None:
            entry, mask = lists.entries(ids)
            ref.append(_pad(torch.where(mask, teacher_pctr[entry], 0.0), width, 0.0))
            student.append(_pad(torch.where(mask, s, 0.0), width, 0.0))
            masks.append(_pad(mask, width, False))
    u, y, s = (torch.cat(x).numpy() for x in (users, labels, scores))
    out = {"auc": metrics.auc(y, s), "gauc": metrics.gauc(u, y, s)}
    if teacher_pctr is not None:
        r, st, m = (torch.cat(x).numpy() for x in (ref, student, masks))
        out["ndcg@10"] = metrics.ndcg_at_k(r, st, 10, m)
        out["kendall_tau"] = metrics.kendall_tau(r, st, m)
        out["recall@10@30"] = metrics.recall_at_k_at_m(r, st, 10, 30, m)
    return out, (u, y, s)


@torch.no_grad()
def teacher_outputs(
    data: LogData,
    space: SampleSpace,
    teacher: FineRanker,
    batch_size: int = 512,
    progress: bool = False,
    list_ids: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's (pCTR, pCTCVR) for every list entry of ``space``, each (E,); only the
    entries of ``list_ids`` are computed if given (the others stay 0)."""
    teacher.eval()
    lists = data.lists(space)
    pctr = torch.zeros(len(lists.item_id))
    pctcvr = torch.zeros(len(lists.item_id))
    ids_all = np.arange(len(lists)) if list_ids is None else np.asarray(list_ids)
    for lo in tqdm(
        range(0, len(ids_all), batch_size), desc="teacher labels", disable=not progress, leave=False
    ):
        ids = ids_all[lo : lo + batch_size]
        batch = make_batch(data, lists, ids)
        out = teacher(batch.user, batch.items, batch.fine_signal)
        entry, mask = lists.entries(ids)
        pctr[entry[mask]] = out.pctr[mask]
        pctcvr[entry[mask]] = out.pctcvr[mask]
    return pctr, pctcvr


ALL_SAMPLES = SampleSpace(unexposed=True, dropped=True, random=True, out_of_scene=True)
"""The sample space with every kind of logged sample (what a search labels up front)."""


def teacher_labels(
    data: LogData, space: SampleSpace, teacher: FineRanker, version: str, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's (pCTR, pCTCVR) of every list entry of ``space``, each (E,), like
    ``teacher_outputs``, but kept with ``data`` per sample row for teacher ``version``: a later
    call (another rung of the ladder, another trial of a search, another space) runs the teacher
    only on the lists holding samples not labelled yet. A sample's labels depend only on its user
    and item; where a sample was labelled within other lists they differ by float rounding."""
    cache = data._teacher_labels
    if version not in cache:
        cache.clear()  # one teacher at a time
        n = len(data.samples)
        cache[version] = (torch.full((n,), torch.nan), torch.full((n,), torch.nan))
    pctr, pctcvr = cache[version]
    lists = data.lists(space)
    missing = torch.isnan(pctr[lists.row])
    if missing.any():
        list_of_entry = torch.repeat_interleave(torch.arange(len(lists)), lists.offsets.diff())
        ids = np.unique(list_of_entry[missing].numpy())
        new_ctr, new_ctcvr = teacher_outputs(data, space, teacher, progress=progress, list_ids=ids)
        rows = lists.row[missing]
        pctr[rows], pctcvr[rows] = new_ctr[missing], new_ctcvr[missing]
    return pctr[lists.row], pctcvr[lists.row]


@dataclasses.dataclass(frozen=True)
class EvalSet:
    data: LogData
    keys: SessionKeys  # (S,) each held-out user's first logged session
    recall: np.ndarray  # (S, R) its recall set
    teacher_recall_scores: np.ndarray  # (S, R) the teacher's pCTR of every recall item
    in_scene: list[np.ndarray]  # per session: items bought in that session (logged)
    out_of_scene: list[np.ndarray]  # per session: items the user bought elsewhere that day
    best: np.ndarray  # (S, funnel_k) truly best items of the pool, by expected clicks
    list_ids: np.ndarray  # held-out logged lists of EVAL_SPACE
    teacher_list_pctr: torch.Tensor  # (E,) teacher pCTR of every entry of EVAL_SPACE
    teacher: FineModelScorer
    sizes: CascadeSizes

    @classmethod
    def build(
        cls,
        world: World,
        data: LogData,
        held_out_users: np.ndarray,
        teacher: FineModelScorer,
        sizes: CascadeSizes,
        n_sessions: int = 500,
        n_lists: int = 20_000,
        funnel_k: int = 10,
        day: int | None = None,
    ) -> EvalSet:
        """The evaluation set of ``held_out_users`` (their first logged session each and their
        logged lists), on ``day`` only if given (a time split's evaluation day)."""
        samples = data.samples
        if day is not None:
            samples = samples[samples["day"] == day]
        first = (
            samples[samples["user_id"].isin(held_out_users) & (samples["page"] >= 0)]
            .sort_values(["user_id", "day", "session"])
            .groupby("user_id", sort=True)[["day", "session"]]
            .first()
            .head(n_sessions)
        )
        users = first.index.to_numpy(np.int64)
        keys = SessionKeys.of(users, first["day"].to_numpy(np.int64), first["session"].to_numpy(np.int64))
        recall = Recall(world)(keys).items
        bought = samples[(samples["sample_type"] == EXPOSED) & (samples["purchase"] > 0)]
        list_ids = held_out_list_ids(data.lists(EVAL_SPACE), held_out_users, n_lists, day)
        return cls(
            data=data,
            keys=keys,
            recall=recall,
            teacher_recall_scores=teacher.score(users, recall),
            in_scene=_items_per_session(keys, bought),
            out_of_scene=_out_of_scene_per_session(world, keys),
            best=best_in_pool(world, users, funnel_k, day=keys.day),  # the session's day (drift, arrivals)
            list_ids=list_ids,
            teacher_list_pctr=teacher_outputs(data, EVAL_SPACE, teacher.model, list_ids=list_ids)[0],
            teacher=teacher,
            sizes=sizes,
        )


def evaluate_coarse(scorer: CoarseModelScorer | Scorer, eval_set: EvalSet) -> dict[str, float]:
    """Every offline metric of a coarse scorer (see the module doc); baselines (no model) get
    the simulator-side metrics only."""
    return _evaluate_coarse(scorer, eval_set)[0]


@dataclasses.dataclass
class ClickRows:
    """Paired offline comparisons on one evaluation set: ``evaluate`` is ``evaluate_coarse``
    and keeps each model's scores of the exposed held-out samples (user, click: the same rows for
    every model), so two models' GAUC difference gets an interval over users."""

    eval_set: EvalSet | None  # None: scores set directly
    users: np.ndarray | None = None
    clicks: np.ndarray | None = None
    scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def evaluate(self, name: str, scorer: CoarseModelScorer | Scorer) -> dict[str, float]:
        """``evaluate_coarse(scorer, eval_set)``; a model's scores are kept under ``name``."""
        out, rows = _evaluate_coarse(scorer, self.eval_set)
        if rows is not None:
            self.users, self.clicks, self.scores[name] = rows
        return out

    def gauc_difference(self, name: str, reference: str) -> tuple[float, float]:
        """(GAUC of ``name`` minus that of ``reference``, half-width of its 95 % interval) in ‰
        (``policies.metrics.gauc_difference``); NaN for a row without scores (a baseline)."""
        if name not in self.scores or reference not in self.scores:
            return float("nan"), float("nan")
        a, b = self.scores[name], self.scores[reference]
        difference, se = metrics.gauc_difference(self.users, self.clicks, a, b)
        return 1000 * difference, 1000 * 1.96 * se


def _evaluate_coarse(
    scorer: CoarseModelScorer | Scorer, eval_set: EvalSet
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """``evaluate_coarse`` and, for a model, the rows of its GAUC (``_list_metrics``)."""
    out: dict[str, float] = {}
    rows = None
    if isinstance(scorer, CoarseModelScorer):
        model = scorer.model
        listed, rows = _list_metrics(
            eval_set.data,
            EVAL_SPACE,
            eval_set.list_ids,
            lambda batch: scorer.task_score(model(batch.user, batch.items), batch.items.item_id),
            eval_set.teacher_list_pctr,
            256,
        )
        out |= listed
    users, recall, C = eval_set.keys.user, eval_set.recall, eval_set.sizes.coarse
    coarse = Cascade(scorer, eval_set.teacher, eval_set.sizes).rank(users, recall)
    top_c = coarse.coarse_items  # (S, C)
    out[f"recall@10@{C}"] = metrics.recall_at_k_at_m(
        eval_set.teacher_recall_scores, scorer.score(users, recall), 10, C
    )
    both = [np.concatenate(pair) for pair in zip(eval_set.in_scene, eval_set.out_of_scene, strict=True)]
    out[f"hitrate_in@{C}"] = metrics.hitrate_at_k(eval_set.in_scene, top_c, C)
    out[f"hitrate_out@{C}"] = metrics.hitrate_at_k(eval_set.out_of_scene, top_c, C)
    out[f"hitrate_global@{C}"] = metrics.hitrate_at_k(both, top_c, C)
    funnel = funnel_loss(eval_set.best, [recall, top_c, coarse.page])
    out |= {f"funnel_{stage}": share for stage, share in funnel.items()}
    return out, rows


def inference_ms_per_1000(scorer: Scorer, user: int, items: np.ndarray, repeats: int = 30) -> float:
    """Median wall time to score one request's ``items`` (R,), per 1,000 candidates."""
    users, batch = np.array([user]), items[None, :]
    scorer.score(users, batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.score(users, batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000 * 1000 / items.size


def _items_per_session(keys: SessionKeys, rows: pd.DataFrame) -> list[np.ndarray]:
    """Item ids of ``rows`` (samples) grouped by the sessions ``keys``, in key order."""
    frame = pd.DataFrame(
        {"user_id": keys.user, "day": keys.day, "session": keys.session, "b": np.arange(len(keys))}
    )
    hits = rows.merge(frame, on=["user_id", "day", "session"])
    return _group(hits["b"].to_numpy(), hits["item_id"].to_numpy(np.int64), len(keys))


def _out_of_scene_per_session(world: World, keys: SessionKeys) -> list[np.ndarray]:
    """Out-of-scene purchases of each session's user on that session's day."""
    rows, items = [], []
    for day in np.unique(keys.day):
        on_day = np.flatnonzero(keys.day == day)
        buyers, bought = out_of_scene_purchases(world, keys.user[on_day], int(day))
        rows.append(on_day[np.searchsorted(keys.user[on_day], buyers)])
        items.append(bought)
    return _group(np.concatenate(rows), np.concatenate(items), len(keys))


def _group(rows: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(rows, kind="stable")
    return np.split(values[order], np.searchsorted(rows[order], np.arange(1, n)))
