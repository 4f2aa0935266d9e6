"""Training losses of the coarse ranker: pointwise BCE, listwise softmax, seed 002's corrected
multi-positive softmax, distillation from the fine ranker and the exposure/click/purchase
multi-task sum.

Every loss takes a padded batch of lists: ``logits`` (B, L), ``labels`` (B, L) and ``mask``
(B, L) bool marking real entries (padding may hold any value, NaN included). The listwise
losses read labels as hard 0/1 (an entry is a positive when its label is > 0.5); they average
their per-positive terms within each list, then over the lists that have at least one
positive. The pointwise losses (BCE, distillation) accept soft labels in [0, 1] and average
over all real entries. A batch with nothing to average returns a zero that still has a
gradient path to ``logits``.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _clean(logits: Tensor, mask: Tensor) -> Tensor:
    """Zero the padding so that NaN or inf there cannot reach values or gradients."""
    return logits.masked_fill(~mask, 0.0)  # (B, L)


def _masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """logsumexp over the entries of each row where ``keep``; a very negative finite number
    for rows with none kept (finite, unlike -inf, so its gradient is not NaN)."""
    filled = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)  # (B, L)
    return torch.logsumexp(filled, dim=1, keepdim=True)  # (B, 1)


def _positives(labels: Tensor, mask: Tensor) -> Tensor:
    return mask & (labels > 0.5)  # (B, L)


def _mean_over_positive_lists(terms: Tensor, positives: Tensor) -> Tensor:
    """Mean of ``terms`` (zero off the positives) over a list's positives, then over the lists
    with at least one positive; 0, still connected to the graph, if there is none."""
    n_pos = positives.sum(dim=1)  # (B,)
    has_pos = n_pos > 0  # (B,)
    per_list = terms.sum(dim=1) / n_pos.clamp(min=1)  # (B,)
    return (per_list * has_pos).sum() / has_pos.sum().clamp(min=1)


def _mean_over_entries(terms: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``terms`` (zero on padding) over the real entries; 0 if there is none."""
    return terms.sum() / mask.sum().clamp(min=1)


def bce_terms(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per-entry binary cross-entropy with (soft) labels in [0, 1]; zero on padding. (B, L)"""
    logits = _clean(logits, mask)
    targets = labels.masked_fill(~mask, 0.0)  # (B, L)
    terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, L)
    return terms.masked_fill(~mask, 0.0)


def bce_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Pointwise binary cross-entropy, soft labels allowed, averaged over the real entries.

    Unlike the listwise losses, lists without a positive do count: their entries are
    informative negatives for a pointwise model.
    """
    return _mean_over_entries(bce_terms(logits, labels, mask), mask)


def softmax_terms(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per-positive terms of the plain multi-positive softmax; zero off the positives. (B, L)

    For a positive i: -log(exp(s_i) / sum_{j in list} exp(s_j)); the denominator holds every
    real entry of the list, the other positives included.
    """
    logits = _clean(logits, mask)
    positives = _positives(labels, mask)
    lse_all = _masked_logsumexp(logits, mask)  # (B, 1)
    return torch.where(positives, lse_all - logits, 0.0)  # (B, L)


def softmax_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Plain listwise softmax with several positives (the form seed 002 criticises: every
    positive also competes with the other positives of its list)."""
    terms = softmax_terms(logits, labels, mask)
    return _mean_over_positive_lists(terms, _positives(labels, mask))


def multi_positive_softmax_terms(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per-positive terms of seed 002's corrected softmax; zero off the positives. (B, L)

    For a positive i: -log(exp(s_i) / (exp(s_i) + sum_{j in negatives} exp(s_j)))
    = softplus(logsumexp_{j in negatives} s_j - s_i). The other positives are left out of the
    denominator, so a positive competes only with the negatives; with no negatives the term
    is 0.
    """
    logits = _clean(logits, mask)
    positives = _positives(labels, mask)
    negatives = mask & ~positives  # (B, L)
    lse_neg = _masked_logsumexp(logits, negatives)  # (B, 1)
    return torch.where(positives, F.softplus(lse_neg - logits), 0.0)  # (B, L)


def multi_positive_softmax_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Seed 002's corrected multi-positive softmax: each positive against the negatives only.

    Equal to ``softmax_loss`` when every list has exactly one positive.
    """
    terms = multi_positive_softmax_terms(logits, labels, mask)
    return _mean_over_positive_lists(terms, _positives(labels, mask))


def label_smoothed_soft_labels(teacher_pctr: Tensor, exposed: Tensor, scale: float) -> Tensor:
    """Distillation targets: the teacher's pCTR for exposed samples, pCTR * scale otherwise.

    Seed 002: an unexposed sample's posterior P(recall -> exposure) is 0, but pCTR * 0 would
    throw away the teacher's ranking of the unexposed samples; pCTR * scale with scale << 1
    keeps that gradient. ``teacher_pctr`` (B, L) must lie in [0, 1]; ``exposed`` (B, L) is
    bool; ``scale`` must lie in [0, 1]. The result is detached: it is a target.
    """
    if not (isinstance(scale, int | float) and 0.0 <= scale <= 1.0):
        raise ValueError(f"scale must be a number in [0, 1], got {scale!r}")
    pctr = teacher_pctr.detach()
    if bool(((pctr < 0.0) | (pctr > 1.0) | pctr.isnan()).any()):
        raise ValueError("teacher_pctr must be probabilities in [0, 1] (were logits passed?)")
    return torch.where(exposed, pctr, pctr * scale)  # (B, L)


def distillation_loss(student_logits: Tensor, teacher_probs: Tensor, mask: Tensor) -> Tensor:
    """Soft-label BCE of the student's logits against the teacher's probabilities, averaged
    over the real entries. The teacher is detached: gradients reach the student only."""
    return bce_loss(student_logits, teacher_probs.detach(), mask)


def listwise_distillation_loss(student_logits: Tensor, teacher_probs: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of the student's softmax over each list against the teacher's
    probabilities normalised over the list, q_i = p_i / sum_j p_j, averaged over the lists with
    a positive total: what the teacher says of the list's *order*, shift-free like the listwise
    hard losses (BCE also fits each probability's level). The teacher is detached."""
    logits = _clean(student_logits, mask)
    p = teacher_probs.detach().masked_fill(~mask, 0.0)  # (B, L)
    total = p.sum(dim=1, keepdim=True)  # (B, 1)
    q = p / total.clamp(min=torch.finfo(p.dtype).tiny)
    per_list = _masked_logsumexp(logits, mask)[:, 0] - (q * logits).sum(dim=1)  # (B,)
    has = total[:, 0] > 0
    return (per_list * has).sum() / has.sum().clamp(min=1)


class DistillLoss(enum.StrEnum):
    """The distillation loss of a coarse ranker; the values are the names used in configs."""

    BCE = "bce"
    LISTWISE = "listwise"


def distill_loss(kind: DistillLoss, student_logits: Tensor, teacher_probs: Tensor, mask: Tensor) -> Tensor:
    """The one dispatch from a ``DistillLoss`` to its loss function."""
    match DistillLoss(kind):
        case DistillLoss.BCE:
            return distillation_loss(student_logits, teacher_probs, mask)
        case DistillLoss.LISTWISE:
            return listwise_distillation_loss(student_logits, teacher_probs, mask)


class ListLoss(enum.StrEnum):
    """The per-task loss of ``multi_task_loss``; the values are the names used in configs."""

    BCE = "bce"
    SOFTMAX = "softmax"
    MULTI_POSITIVE_SOFTMAX = "multi_positive_softmax"


def list_loss(kind: ListLoss, logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """The one dispatch from a ``ListLoss`` to its loss function."""
    match ListLoss(kind):
        case ListLoss.BCE:
            return bce_loss(logits, labels, mask)
        case ListLoss.SOFTMAX:
            return softmax_loss(logits, labels, mask)
        case ListLoss.MULTI_POSITIVE_SOFTMAX:
            return multi_positive_softmax_loss(logits, labels, mask)


@dataclasses.dataclass(frozen=True)
class TaskWeights:
    """Weights of the exposure, click and purchase tasks in the multi-task sum."""

    exposure: float = 1.0
    """Weight of the exposure task (was the item shown to the user)."""
    click: float = 1.0
    """Weight of the click task."""
    purchase: float = 1.0
    """Weight of the purchase task."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"TaskWeights.{field.name} must be finite and >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TaskLogits:
    """One task's scores and labels over the shared padded lists."""

    logits: Tensor
    """(B, L) the model's logits for this task."""
    labels: Tensor
    """(B, L) this task's labels (hard 0/1 for the softmax losses, soft allowed for BCE)."""


@dataclasses.dataclass(frozen=True)
class MultiTaskLoss:
    """The weighted total (to backpropagate) and the unweighted per-task losses (to log)."""

    total: Tensor
    exposure: Tensor
    click: Tensor
    purchase: Tensor


def multi_task_loss(
    exposure: TaskLogits,
    click: TaskLogits,
    purchase: TaskLogits,
    mask: Tensor,
    weights: TaskWeights = TaskWeights(),
    kind: ListLoss = ListLoss.MULTI_POSITIVE_SOFTMAX,
) -> MultiTaskLoss:
    """Weighted sum of the exposure, click and purchase losses, each computed by ``kind`` over
    the same lists ``mask`` (B, L)."""
    exposure_loss = list_loss(kind, exposure.logits, exposure.labels, mask)
    click_loss = list_loss(kind, click.logits, click.labels, mask)
    purchase_loss = list_loss(kind, purchase.logits, purchase.labels, mask)
    total = weights.exposure * exposure_loss + weights.click * click_loss + weights.purchase * purchase_loss
    return MultiTaskLoss(total=total, exposure=exposure_loss, click=click_loss, purchase=purchase_loss)
