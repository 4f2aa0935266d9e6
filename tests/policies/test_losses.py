import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from policies.losses import (
    DistillLoss,
    ListLoss,
    TaskLogits,
    TaskWeights,
    bce_loss,
    distill_loss,
    distillation_loss,
    label_smoothed_soft_labels,
    list_loss,
    listwise_distillation_loss,
    multi_positive_softmax_loss,
    multi_positive_softmax_terms,
    multi_task_loss,
    softmax_loss,
    softmax_terms,
)

LOGIT = st.floats(-30.0, 30.0)
# torch's first call in a process can take most of a second; no per-example deadline.
NO_DEADLINE = settings(deadline=None)


@st.composite
def padded_lists(draw, min_pos: int = 0, max_pos: int | None = None, logit=LOGIT):
    """(logits, labels, mask) as float64 tensors of shape (B, L); every list has at least one
    real entry and between min_pos and max_pos positives among its real entries."""
    n_lists = draw(st.integers(1, 4))
    length = draw(st.integers(max(1, min_pos + 1), 8))
    logits = draw(hnp.arrays(np.float64, (n_lists, length), elements=logit))
    mask = np.zeros((n_lists, length), dtype=bool)
    labels = np.zeros((n_lists, length))
    for row in range(n_lists):
        real = draw(st.lists(st.integers(0, length - 1), min_size=max(1, min_pos), unique=True))
        mask[row, real] = True
        hi = len(real) if max_pos is None else min(max_pos, len(real))
        n_pos = draw(st.integers(min(min_pos, hi), hi))
        labels[row, real[:n_pos]] = 1.0
    logits[~mask] = np.nan  # padding must never matter
    return torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask)


def per_list_mean_of_positive_terms(logits, labels, mask, competitors) -> float:
    """Brute force from the formula: per positive i, -log(exp(s_i) / sum_{j in competitors(i)}
    exp(s_j)); averaged over a list's positives, then over the lists with a positive."""
    per_list = []
    for s, y, real in zip(logits.tolist(), labels.tolist(), mask.tolist(), strict=True):
        entries = [(score, label > 0.5) for score, label, r in zip(s, y, real, strict=True) if r]
        terms = [
            -score + math.log(sum(math.exp(other) for other in competitors(score, entries)))
            for score, positive in entries
            if positive
        ]
        if terms:
            per_list.append(sum(terms) / len(terms))
    return sum(per_list) / len(per_list) if per_list else 0.0


@NO_DEADLINE
@given(padded_lists())
def test_softmax_loss_equals_its_formula(batch):
    logits, labels, mask = batch
    expected = per_list_mean_of_positive_terms(
        logits, labels, mask, lambda _, entries: [other for other, _ in entries]
    )
    np.testing.assert_allclose(softmax_loss(logits, labels, mask).item(), expected, rtol=1e-9, atol=1e-12)


@NO_DEADLINE
@given(padded_lists())
def test_multi_positive_softmax_loss_equals_its_formula(batch):
    logits, labels, mask = batch
    expected = per_list_mean_of_positive_terms(
        logits, labels, mask, lambda score, entries: [score] + [other for other, pos in entries if not pos]
    )
    np.testing.assert_allclose(
        multi_positive_softmax_loss(logits, labels, mask).item(), expected, rtol=1e-9, atol=1e-12
    )


@NO_DEADLINE
@given(padded_lists(), st.data())
def test_bce_loss_averages_torch_bce_over_real_entries(batch, data):
    logits, _, mask = batch
    soft = torch.from_numpy(data.draw(hnp.arrays(np.float64, mask.shape, elements=st.floats(0.0, 1.0))))
    expected = F.binary_cross_entropy_with_logits(logits[mask], soft[mask])
    torch.testing.assert_close(bce_loss(logits, soft, mask), expected)


@NO_DEADLINE
@given(padded_lists(min_pos=1, max_pos=1))
def test_multi_positive_softmax_equals_softmax_with_one_positive(batch):
    logits, labels, mask = batch
    torch.testing.assert_close(
        multi_positive_softmax_loss(logits, labels, mask), softmax_loss(logits, labels, mask)
    )


@NO_DEADLINE
@given(
    padded_lists(min_pos=1),
    hnp.arrays(np.float64, st.integers(1, 4), elements=LOGIT),
)
def test_positive_term_unchanged_when_other_positives_are_added(batch, extra_logits):
    logits, labels, mask = batch
    n_extra = len(extra_logits)
    extra = torch.from_numpy(np.broadcast_to(extra_logits, (len(logits), n_extra)).copy())
    more_logits = torch.cat([logits, extra], dim=1)
    more_labels = torch.cat([labels, torch.ones_like(extra)], dim=1)
    more_mask = torch.cat([mask, torch.ones_like(extra, dtype=torch.bool)], dim=1)

    before = multi_positive_softmax_terms(logits, labels, mask)
    after = multi_positive_softmax_terms(more_logits, more_labels, more_mask)[:, : logits.shape[1]]
    torch.testing.assert_close(after, before)


@NO_DEADLINE
@given(padded_lists(min_pos=2, logit=st.floats(-5.0, 5.0)))
def test_multi_positive_softmax_is_below_softmax_with_two_or_more_positives(batch):
    # Removing the other positives from each denominator strictly lowers every term.
    logits, labels, mask = batch
    assert multi_positive_softmax_loss(logits, labels, mask) < softmax_loss(logits, labels, mask)


@NO_DEADLINE
@given(
    padded_lists(min_pos=1, logit=st.floats(-5.0, 5.0)),
    hnp.arrays(np.float64, st.integers(1, 4), elements=st.floats(-5.0, 5.0)),
)
def test_softmax_term_grows_when_other_positives_are_added(batch, extra_logits):
    # The counterpart of the invariance above (and a check that its set-up can detect a
    # dependence): the plain softmax's terms do depend on the other positives.
    logits, labels, mask = batch
    n_extra = len(extra_logits)
    extra = torch.from_numpy(np.broadcast_to(extra_logits, (len(logits), n_extra)).copy())
    more_logits = torch.cat([logits, extra], dim=1)
    more_labels = torch.cat([labels, torch.ones_like(extra)], dim=1)
    more_mask = torch.cat([mask, torch.ones_like(extra, dtype=torch.bool)], dim=1)

    positives = mask & (labels > 0.5)
    before = softmax_terms(logits, labels, mask)[positives]
    after = softmax_terms(more_logits, more_labels, more_mask)[:, : logits.shape[1]][positives]
    assert (after > before).all()


@NO_DEADLINE
@given(padded_lists())
def test_padding_values_do_not_change_the_losses(batch):
    logits, labels, mask = batch
    zero_padded = logits.masked_fill(~mask, 0.0)
    inf_padded = logits.masked_fill(~mask, math.inf)
    for kind in ListLoss:
        torch.testing.assert_close(
            list_loss(kind, inf_padded, labels, mask), list_loss(kind, zero_padded, labels, mask)
        )


@pytest.mark.parametrize("kind", list(ListLoss))
@NO_DEADLINE
@given(batch=padded_lists(logit=st.floats(-1e4, 1e4)))
def test_losses_backprop_finite_gradients(kind, batch):
    logits, labels, mask = batch
    logits = logits.clone().requires_grad_(True)
    loss = list_loss(kind, logits, labels, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~mask] == 0).all()


@pytest.mark.parametrize("loss_fn", [softmax_loss, multi_positive_softmax_loss])
def test_listwise_loss_without_positives_is_zero_with_a_gradient_path(loss_fn):
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(3, 5))).requires_grad_(True)
    mask = torch.from_numpy(rng.random((3, 5)) < 0.7)
    loss = loss_fn(logits, torch.zeros(3, 5, dtype=torch.float64), mask)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("loss_fn", [softmax_loss, multi_positive_softmax_loss])
def test_lists_without_positives_contribute_nothing(loss_fn):
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(2, 6)))
    labels = torch.tensor([[1.0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    torch.testing.assert_close(loss_fn(logits, labels, mask), loss_fn(logits[:1], labels[:1], mask[:1]))


def test_distillation_gradients_reach_the_student_only():
    rng = np.random.default_rng(2)
    student = torch.from_numpy(rng.normal(size=(2, 6))).requires_grad_(True)
    teacher_logits = torch.from_numpy(rng.normal(size=(2, 6))).requires_grad_(True)
    mask = torch.from_numpy(rng.random((2, 6)) < 0.8)
    distillation_loss(student, torch.sigmoid(teacher_logits), mask).backward()
    assert teacher_logits.grad is None
    assert torch.isfinite(student.grad).all()
    assert (student.grad[mask] != 0).all()


@NO_DEADLINE
@given(hnp.arrays(np.float64, (3, 5), elements=st.floats(0.01, 0.99)))
def test_distillation_gradient_vanishes_when_student_matches_teacher(teacher):
    teacher = torch.from_numpy(teacher)
    student = torch.logit(teacher).requires_grad_(True)
    distillation_loss(student, teacher, torch.ones(3, 5, dtype=torch.bool)).backward()
    torch.testing.assert_close(student.grad, torch.zeros_like(student), atol=1e-12, rtol=0)


@NO_DEADLINE
@given(
    hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0.0, 1.0)),
    st.data(),
    st.floats(0.0, 1.0),
)
def test_smoothed_labels_of_unexposed_samples_lie_in_zero_to_scale(pctr, data, scale):
    exposed = data.draw(hnp.arrays(np.bool_, pctr.shape))
    soft = label_smoothed_soft_labels(torch.from_numpy(pctr), torch.from_numpy(exposed), scale).numpy()
    unexposed = soft[~exposed]
    assert ((unexposed >= 0.0) & (unexposed <= scale)).all()
    np.testing.assert_allclose(unexposed, pctr[~exposed] * scale)


@NO_DEADLINE
@given(
    hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0.0, 1.0)),
    st.data(),
    st.floats(0.0, 1.0),
)
def test_smoothed_labels_of_exposed_samples_are_the_teacher_pctr(pctr, data, scale):
    exposed = data.draw(hnp.arrays(np.bool_, pctr.shape))
    soft = label_smoothed_soft_labels(torch.from_numpy(pctr), torch.from_numpy(exposed), scale).numpy()
    np.testing.assert_array_equal(soft[exposed], pctr[exposed])


@pytest.mark.parametrize("scale", [-0.01, 1.01, math.nan, math.inf])
def test_invalid_smoothing_scale_raises(scale):
    with pytest.raises(ValueError, match="scale"):
        label_smoothed_soft_labels(torch.full((2, 3), 0.5), torch.zeros(2, 3, dtype=torch.bool), scale)


def test_teacher_logits_instead_of_probabilities_raise():
    with pytest.raises(ValueError, match="teacher_pctr"):
        label_smoothed_soft_labels(torch.tensor([[2.0, -1.0]]), torch.tensor([[True, False]]), 0.1)


@pytest.mark.parametrize(
    ("kind", "loss_fn"),
    [
        (ListLoss.BCE, bce_loss),
        (ListLoss.SOFTMAX, softmax_loss),
        (ListLoss.MULTI_POSITIVE_SOFTMAX, multi_positive_softmax_loss),
    ],
)
def test_multi_task_loss_is_the_weighted_sum_of_the_chosen_task_losses(kind, loss_fn):
    rng = np.random.default_rng(3)
    mask = torch.from_numpy(rng.random((4, 7)) < 0.8)
    exposure, click, purchase = (
        TaskLogits(
            torch.from_numpy(rng.normal(size=(4, 7))),
            torch.from_numpy((rng.random((4, 7)) < p).astype(np.float64)),
        )
        for p in (0.5, 0.2, 0.1)
    )
    weights = TaskWeights(exposure=0.3, click=1.7, purchase=2.9)
    result = multi_task_loss(exposure, click, purchase, mask, weights, kind)
    expected = (
        0.3 * loss_fn(exposure.logits, exposure.labels, mask)
        + 1.7 * loss_fn(click.logits, click.labels, mask)
        + 2.9 * loss_fn(purchase.logits, purchase.labels, mask)
    )
    torch.testing.assert_close(result.total, expected)


def test_multi_task_loss_defaults_to_the_multi_positive_softmax():
    rng = np.random.default_rng(4)
    mask = torch.ones(3, 6, dtype=torch.bool)
    two_positives = np.eye(3, 6) + np.eye(3, 6, 2)
    task = TaskLogits(torch.from_numpy(rng.normal(size=(3, 6))), torch.from_numpy(two_positives))
    result = multi_task_loss(task, task, task, mask)
    torch.testing.assert_close(result.click, multi_positive_softmax_loss(task.logits, task.labels, mask))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_invalid_task_weight_raises(bad):
    with pytest.raises(ValueError, match="click"):
        TaskWeights(click=bad)


def test_list_loss_names_parse_from_config_strings():
    assert [ListLoss(kind.value) for kind in ListLoss] == list(ListLoss)
    with pytest.raises(ValueError, match="listnet"):
        ListLoss("listnet")


@NO_DEADLINE
@given(
    hnp.arrays(np.float64, (3, 6), elements=LOGIT),
    hnp.arrays(np.float64, (3, 6), elements=st.floats(1e-4, 1.0)),
    st.floats(-20.0, 20.0),
    st.floats(0.01, 100.0),
)
def test_listwise_distillation_is_torchs_soft_target_cross_entropy_and_reads_only_the_order(
    student, teacher, shift, scale
):
    """Over full lists it is torch's cross-entropy against q = p / sum p; it ignores a shift of
    the student's logits and a common scale of the teacher's probabilities (only the order of
    the list is distilled), and padding changes nothing."""
    student, teacher = torch.from_numpy(student), torch.from_numpy(teacher)
    full = torch.ones(3, 6, dtype=torch.bool)
    loss = listwise_distillation_loss(student, teacher, full)
    expected = F.cross_entropy(student, teacher / teacher.sum(1, keepdim=True))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(listwise_distillation_loss(student + shift, teacher, full), loss)
    torch.testing.assert_close(listwise_distillation_loss(student, teacher * scale / 100.0, full), loss)
    padded_mask = torch.cat([full, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    padded = listwise_distillation_loss(
        torch.cat([student, torch.full((3, 2), float("nan"), dtype=torch.float64)], dim=1),
        torch.cat([teacher, torch.full((3, 2), 0.7, dtype=torch.float64)], dim=1),
        padded_mask,
    )
    torch.testing.assert_close(padded, loss)


def test_listwise_distillation_is_smallest_where_the_student_has_the_teachers_order():
    rng = np.random.default_rng(3)
    teacher = torch.from_numpy(rng.uniform(0.01, 0.5, (2, 6)))
    student = torch.log(teacher).requires_grad_(True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    listwise_distillation_loss(student, teacher, mask).backward()
    torch.testing.assert_close(student.grad, torch.zeros_like(student), atol=1e-12, rtol=0)
    empty = torch.zeros(1, 6, dtype=torch.float64)  # a list the teacher gives nothing counts for nothing
    both = listwise_distillation_loss(
        torch.cat([student.detach(), empty]), torch.cat([teacher, empty]), torch.ones(3, 6, dtype=torch.bool)
    )
    torch.testing.assert_close(both, listwise_distillation_loss(student.detach(), teacher, mask))


def test_distill_loss_names_reach_their_loss_functions():
    rng = np.random.default_rng(4)
    student = torch.from_numpy(rng.normal(size=(2, 6)))
    teacher = torch.from_numpy(rng.uniform(0.01, 0.5, (2, 6)))
    mask = torch.from_numpy(rng.random((2, 6)) < 0.8)
    for name, fn in (("bce", distillation_loss), ("listwise", listwise_distillation_loss)):
        torch.testing.assert_close(
            distill_loss(DistillLoss(name), student, teacher, mask), fn(student, teacher, mask)
        )
    with pytest.raises(ValueError, match="kl"):
        DistillLoss("kl")
