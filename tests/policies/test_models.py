import dataclasses
import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.config import from_mapping, to_plain
from policies.batch import ItemFeatures, UserFeatures
from policies.checkpoint import _version, model_version
from policies.models import (
    BilinearInteraction,
    CoarseConfig,
    CoarseRanker,
    FineConfig,
    FineRanker,
    InteractionScorer,
    ItemEmbedding,
    NovaAttention,
    SENet,
    Similarity,
    Vocab,
    _embedding,
    _linear,
)

VOCAB = Vocab(n_items=60, n_users=20, n_categories=6, n_brands=12)
SWITCHES = ("mlp_scorer", "fm_cross", "nova", "senet_bilinear")
ALL_ON = CoarseConfig(
    similarity=Similarity.COSINE, mlp_scorer=True, fm_cross=True, nova=True, senet_bilinear=True
)


def _catalogue(vocab: Vocab, seed: int) -> ItemFeatures:
    """Fixed side features per item id, so an id always comes with the same category etc."""
    g = torch.Generator().manual_seed(seed)
    n = vocab.n_items
    return ItemFeatures(
        item_id=torch.arange(n),
        category=torch.randint(0, vocab.n_categories, (n,), generator=g),
        brand=torch.randint(0, vocab.n_brands, (n,), generator=g),
        price_bucket=torch.randint(0, vocab.n_price_buckets, (n,), generator=g),
        is_new=torch.randint(0, 2, (n,), generator=g).float(),
    )


CATALOGUE = _catalogue(VOCAB, seed=0)


def _users(seed: int, batch: int = 4, history: int = 7) -> UserFeatures:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB.n_items, (batch, history), generator=g)
    return UserFeatures(torch.randint(0, VOCAB.n_users, (batch,), generator=g), CATALOGUE.index(ids))


def _items(seed: int, shape: tuple[int, ...]) -> ItemFeatures:
    g = torch.Generator().manual_seed(seed)
    return CATALOGUE.index(torch.randint(0, VOCAB.n_items, shape, generator=g))


def _coarse(config: CoarseConfig, seed: int = 0) -> CoarseRanker:
    return CoarseRanker(config, VOCAB, seed=seed).eval()


def _with_history(user: UserFeatures, history: ItemFeatures) -> UserFeatures:
    return UserFeatures(user.user_id, history)


# ---------------------------------------------------------------------------------------------
# Coarse ranker


@pytest.mark.parametrize("similarity", list(Similarity))
@pytest.mark.parametrize("switches", list(itertools.product([False, True], repeat=len(SWITCHES))))
def test_every_switch_combination_scores_finite_logits(similarity, switches):
    config = CoarseConfig(similarity=similarity, **dict(zip(SWITCHES, switches, strict=True)))
    model = _coarse(config)
    user, items = _users(1), _items(2, (4, 5))
    shared = model.score(model.encode_user(user), model.encode_items(CATALOGUE))
    per_request = model(user, items)
    assert shared.shape == (4, VOCAB.n_items, config.n_tasks)
    assert per_request.shape == (4, 5, config.n_tasks)
    assert torch.isfinite(shared).all() and torch.isfinite(per_request).all()
    assert shared.std(dim=1).min() > 0  # items are told apart, not a constant


@pytest.mark.parametrize(
    "config",
    [CoarseConfig(), ALL_ON, CoarseConfig(fm_cross=True), CoarseConfig(similarity=Similarity.COSINE)],
)
def test_two_tower_split_equals_forward(config):
    model = _coarse(config)
    user = _users(3)
    g = torch.Generator().manual_seed(4)
    idx = torch.randint(0, VOCAB.n_items, (4, 9), generator=g)
    with torch.no_grad():
        shared = model.score(model.encode_user(user), model.encode_items(CATALOGUE))  # (B, N, T)
        per_request = model(user, CATALOGUE.index(idx))  # (B, L, T)
    gathered = torch.gather(shared, 1, idx[..., None].expand(-1, -1, config.n_tasks))
    torch.testing.assert_close(per_request, gathered, rtol=1e-5, atol=1e-5)


def test_history_change_moves_user_side_only():
    model = _coarse(ALL_ON)
    user = _users(5)
    other = _with_history(user, _users(6).history)
    with torch.no_grad():
        items_before = model.encode_items(CATALOGUE)
        u1, u2 = model.encode_user(user), model.encode_user(other)
        items_after = model.encode_items(CATALOGUE)
        scores = model(other, CATALOGUE.index(torch.arange(VOCAB.n_items).expand(4, -1)))
    assert not torch.allclose(u1, u2)
    torch.testing.assert_close(items_before, items_after, rtol=0, atol=0)
    torch.testing.assert_close(scores, model.score(u2, items_before), rtol=1e-5, atol=1e-5)


def test_padded_history_content_is_ignored():
    model = _coarse(ALL_ON)
    user = _users(7)
    pad = torch.zeros(4, 7, dtype=torch.bool)
    pad[:, 4:] = True
    pad[0, 1:] = True
    noise = _users(8).history
    hist_a = dataclasses.replace(user.history, item_id=user.history.item_id.masked_fill(pad, -1))
    hist_b = ItemFeatures(
        item_id=hist_a.item_id,
        category=torch.where(pad, noise.category, hist_a.category),
        brand=torch.where(pad, noise.brand, hist_a.brand),
        price_bucket=torch.where(pad, noise.price_bucket, hist_a.price_bucket),
        is_new=torch.where(pad, 1 - hist_a.is_new, hist_a.is_new),
    )
    with torch.no_grad():
        a = model.encode_user(_with_history(user, hist_a))
        b = model.encode_user(_with_history(user, hist_b))
        full = model.encode_user(user)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, full)  # the mask does something


def test_coarse_user_tower_ignores_history_order():
    model = _coarse(ALL_ON)
    user = _users(9)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model.encode_user(user)
        b = model.encode_user(_with_history(user, user.history.index((slice(None), perm))))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _nova_inputs(seed: int, same_ids: bool) -> tuple[ItemEmbedding, NovaAttention, ItemFeatures]:
    g = torch.Generator().manual_seed(seed)
    embed, nova = ItemEmbedding(VOCAB, 16, g), NovaAttention(16, g)
    history = _users(seed).history
    if same_ids:
        history = dataclasses.replace(history, item_id=torch.full_like(history.item_id, 3))
    return embed, nova, history


def _resample_side(history: ItemFeatures, seed: int) -> ItemFeatures:
    g = torch.Generator().manual_seed(seed)
    shape = history.item_id.shape
    return dataclasses.replace(
        history,
        category=torch.randint(0, VOCAB.n_categories, shape, generator=g),
        brand=torch.randint(0, VOCAB.n_brands, shape, generator=g),
        price_bucket=torch.randint(0, VOCAB.n_price_buckets, shape, generator=g),
    )


def test_nova_side_information_steers_attention_but_values_are_ids_only():
    """All history items share one id: side features change the attention weights, but every
    value is the same id embedding, so the pooled output cannot move."""
    embed, nova, history = _nova_inputs(10, same_ids=True)
    changed = _resample_side(history, 11)
    mask = history.item_id >= 0
    with torch.no_grad():
        w1, w2 = nova.weights(embed(history), mask), nova.weights(embed(changed), mask)
        y1, _ = nova(embed(history), embed.ids(history), mask)
        y2, _ = nova(embed(changed), embed.ids(changed), mask)
    assert not torch.allclose(w1, w2)
    torch.testing.assert_close(y1, y2)


def test_nova_side_information_changes_output_for_distinct_ids():
    embed, nova, history = _nova_inputs(12, same_ids=False)
    changed = _resample_side(history, 13)
    mask = history.item_id >= 0
    with torch.no_grad():
        y1, _ = nova(embed(history), embed.ids(history), mask)
        y2, _ = nova(embed(changed), embed.ids(changed), mask)
    assert not torch.allclose(y1, y2)


def test_nova_share_sums_to_one_over_real_behaviours_and_is_uniform_without_query():
    embed, nova, history = _nova_inputs(18, same_ids=False)
    ids = history.item_id.clone()
    ids[0, 3:] = -1  # a short history
    ids[1] = -1  # an empty one
    history = dataclasses.replace(history, item_id=ids)
    mask = ids >= 0
    with torch.no_grad():
        _, share = nova(embed(history), embed.ids(history), mask)
        assert (share[~mask] == 0).all()
        torch.testing.assert_close(share.sum(dim=1)[mask.any(dim=1)], torch.ones(int(mask.any(dim=1).sum())))
        assert not torch.allclose(share[0, :3], torch.full((3,), 1 / 3))  # attention is not uniform
        nova.query.weight.zero_()  # every logit 0: uniform attention over the real behaviours
        _, uniform = nova(embed(history), embed.ids(history), mask)
    expected = mask / mask.sum(dim=1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(uniform, expected.float())


def test_fm_cross_adds_weighted_mean_history_dot_product():
    """With the shared weights copied, FM on vs off differs by exactly w * sum_h a_h <e_h, e_t>
    (a_h: NOVA's attention share, 1/n without NOVA), non-zero when the target is in the
    history."""
    with_fm = _coarse(dataclasses.replace(ALL_ON, fm_cross=True))
    without = _coarse(dataclasses.replace(ALL_ON, fm_cross=False))
    missing, unexpected = without.load_state_dict(with_fm.state_dict(), strict=False)
    assert not missing and unexpected == ["fm_weight"]
    user = _users(14)
    targets = user.history.index((slice(None), slice(0, 3)))  # (B, 3) items from the history
    with torch.no_grad():
        delta = with_fm(user, targets) - without(user, targets)  # (B, 3, T)
        e_h, e_t = with_fm.embed(user.history), with_fm.embed(targets)
        mask = user.history.item_id >= 0
        _, share = with_fm.nova(with_fm.nova_side(user, e_h), with_fm.embed.ids(user.history), mask)
    history = (share[..., None] * e_h).sum(dim=1)  # (B, D)
    expected = (e_t @ history[:, :, None]) * with_fm.fm_weight.detach()  # (B, 3, T)
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-5)
    assert expected.abs().min() > 0


def test_interaction_scorer_equals_mlp_on_concatenation():
    g = torch.Generator().manual_seed(17)
    scorer = InteractionScorer(dim=8, hidden=16, n_out=3, generator=g)
    u, v = torch.randn(2, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    uu = u[:, None, :].expand(2, 5, 8)
    expected = scorer.rest(scorer.first(torch.cat([uu, v, uu * v], dim=-1)))
    torch.testing.assert_close(scorer(u, v), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scorer(u, v[:1]), scorer(u, v[:1].expand(2, 5, 8)))


def test_senet_weights_lie_in_unit_interval():
    g = torch.Generator().manual_seed(15)
    senet = SENet(ItemEmbedding.N_FIELDS, reduction=2, generator=g)
    fields = 10 * torch.randn(50, ItemEmbedding.N_FIELDS, 16, generator=g)
    weights = senet.weights(fields)
    assert weights.shape == (50, ItemEmbedding.N_FIELDS)
    assert ((weights > 0) & (weights < 1)).all()
    torch.testing.assert_close(senet(fields), fields * weights[..., None])


def test_bilinear_interaction_pairs_every_field_once():
    g = torch.Generator().manual_seed(16)
    bilinear = BilinearInteraction(n_fields=4, dim=3, generator=g)
    fields = torch.randn(2, 4, 3, generator=g)
    out = bilinear(fields)
    assert out.shape == (2, 6, 3)
    expected = (fields[:, 1] @ bilinear.weight) * fields[:, 3]  # pair (1, 3) is the 5th
    torch.testing.assert_close(out[:, 4], expected)


# ---------------------------------------------------------------------------------------------
# Fine ranker


def _fine(seed: int = 0, config: FineConfig | None = None, vocab: Vocab = VOCAB) -> FineRanker:
    return FineRanker(config or FineConfig(dim=16, attention_hidden=16, hidden=(32, 16)), vocab, seed=seed)


def test_fine_probabilities_are_ordered_in_unit_interval():
    model = _fine()
    with torch.no_grad():
        out = model(_users(20), _items(21, (4, 11)))
    assert out.click_logit.shape == out.purchase_logit.shape == (4, 11)
    assert ((out.pctr >= 0) & (out.pctr <= 1)).all()
    assert ((out.pctcvr >= 0) & (out.pctcvr <= out.pctr)).all()


def test_fine_gradients_reach_every_parameter():
    model = _fine()
    out = model(_users(22), _items(23, (4, 11)))
    (out.click_logit.sum() + out.purchase_logit.sum()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_fine_ignores_padded_history_content():
    model = _fine()
    user, items = _users(24), _items(25, (4, 5))
    pad = torch.zeros(4, 7, dtype=torch.bool)
    pad[:, 5:] = True
    hist_a = dataclasses.replace(user.history, item_id=user.history.item_id.masked_fill(pad, -1))
    hist_b = dataclasses.replace(hist_a, category=torch.where(pad, items.category[:, :1], hist_a.category))
    with torch.no_grad():
        a = model(_with_history(user, hist_a), items).click_logit
        b = model(_with_history(user, hist_b), items).click_logit
    torch.testing.assert_close(a, b)


def _auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    pos, neg = scores[labels > 0.5], scores[labels < 0.5]
    wins = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    return wins.mean().item()


def _category_task(gen: torch.Generator, catalogue: ItemFeatures, vocab: Vocab, n: int, length: int):
    """Each user mostly browses one favourite category; a click is a target in that category."""
    favourite = torch.randint(0, vocab.n_categories, (n,), generator=gen)  # (n,)
    by_category = [torch.nonzero(catalogue.category == c).squeeze(1) for c in range(vocab.n_categories)]
    history = torch.randint(0, vocab.n_items, (n, 10), generator=gen)  # (n, 10) noise
    on_topic = torch.rand(n, 10, generator=gen) < 0.7
    for c in range(vocab.n_categories):
        rows = favourite == c
        picks = by_category[c][torch.randint(0, len(by_category[c]), (int(rows.sum()), 10), generator=gen)]
        history[rows] = torch.where(on_topic[rows], picks, history[rows])
    targets = torch.randint(0, vocab.n_items, (n, length), generator=gen)  # (n, L)
    target_items = catalogue.index(targets)
    clicks = (target_items.category == favourite[:, None]).float()  # (n, L)
    users = UserFeatures(torch.randint(0, vocab.n_users, (n,), generator=gen), catalogue.index(history))
    return users, target_items, clicks


def test_fine_learns_category_match():
    vocab = Vocab(n_items=200, n_users=100, n_categories=5, n_brands=20)
    catalogue = _catalogue(vocab, seed=30)
    gen = torch.Generator().manual_seed(31)
    model = _fine(seed=32, vocab=vocab)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        users, items, clicks = _category_task(gen, catalogue, vocab, n=32, length=8)
        loss = F.binary_cross_entropy_with_logits(model(users, items).click_logit, clicks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    users, items, clicks = _category_task(gen, catalogue, vocab, n=256, length=8)
    with torch.no_grad():
        scores = model(users, items).click_logit
    auc = _auc(clicks.flatten(), scores.flatten())
    print(f"held-out AUC {auc:.3f}")
    assert auc > 0.8


# ---------------------------------------------------------------------------------------------
# Config validation


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: CoarseConfig(temperature=0.0), "temperature"),
        (lambda: CoarseConfig(temperature=-1.0), "temperature"),
        (lambda: CoarseConfig(temperature=float("nan")), "temperature"),
        (lambda: CoarseConfig(dim=0), "dim"),
        (lambda: CoarseConfig(n_tasks=0), "n_tasks"),
        (lambda: CoarseConfig(similarity="cos"), "similarity"),  # enums are given by value
        (lambda: CoarseConfig(nova=1), "nova"),
        (lambda: FineConfig(dim=0), "dim"),
        (lambda: FineConfig(hidden=()), "hidden"),
        (lambda: Vocab(n_items=0, n_users=1, n_categories=1, n_brands=1), "n_items"),
    ],
)
def test_invalid_config_raises_naming_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


@pytest.mark.parametrize("similarity", list(Similarity))
def test_coarse_gradients_reach_every_parameter(similarity):
    # with every switch on, a loss on all three tasks must train every parameter (no dead branch)
    model = _coarse(dataclasses.replace(ALL_ON, similarity=similarity)).train()
    user, items = _users(5, batch=6), _items(6, (6, 8))
    model(user, items).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------
# Initialisation


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_layers_drawn_from_a_generator_equal_torch_default_initialisation():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = [nn.Linear(12, 5), nn.Embedding(9, 3), nn.Linear(5, 2, bias=False)]
    g = torch.Generator().manual_seed(7)
    built = [_linear(12, 5, g), _embedding(9, 3, g), _linear(5, 2, g, bias=False)]
    assert all(_same_state(a, b) for a, b in zip(built, expected, strict=True))


@pytest.mark.parametrize(
    "build",
    [lambda seed: CoarseRanker(ALL_ON, VOCAB, seed=seed), _fine],
    ids=["coarse", "fine"],
)
def test_the_seed_alone_decides_a_models_initial_weights(build):
    state = torch.get_rng_state()
    first = build(4)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not drawn from
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        again = build(4)
    assert _same_state(first, again)
    assert not _same_state(first, build(5))


# ---------------------------------------------------------------------------------------------
# Dwell (the behaviours' logged dwell as NOVA's side information)

DWELL_REFERENCE_COMMIT = "d42a7e5f42524a95263cc66fca047bd98a1cc24a"
"""The last commit whose models did not know dwell."""
ROOT = Path(__file__).resolve().parents[2]


def _with_dwell(user: UserFeatures, seed: int) -> UserFeatures:
    """The user's history with dwell seconds spread over every bucket (0.5 s .. ~500 s)."""
    g = torch.Generator().manual_seed(seed)
    seconds = torch.exp(torch.empty(user.history.item_id.shape).uniform_(-0.7, 6.2, generator=g))
    return dataclasses.replace(user, history_dwell=seconds)


@pytest.fixture(scope="module")
def reference_models(tmp_path_factory):
    """policies/models.py of DWELL_REFERENCE_COMMIT, imported as its own module."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{DWELL_REFERENCE_COMMIT}:policies/models.py"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with commit {DWELL_REFERENCE_COMMIT[:10]} is not available")
    path = tmp_path_factory.mktemp("reference") / "reference_models.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("reference_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("kind", ["coarse_nova", "coarse_all_but_fm", "fine"])
def test_models_without_dwell_are_the_reference_codes_byte_for_byte(reference_models, kind):
    # same seed: same weights, same checkpoint version, same outputs even when the features
    # carry dwell (the reference code has no notion of it); not with NOVA and the FM cross
    # together: NOVA's attention weights the FM cross's history since 2026-12-08
    ref = reference_models
    all_but_fm = dataclasses.replace(ALL_ON, fm_cross=False)
    configs = {"coarse_nova": CoarseConfig(nova=True), "coarse_all_but_fm": all_but_fm, "fine": FineConfig()}
    config = configs[kind]
    old_config = from_mapping(ref.FineConfig if kind == "fine" else ref.CoarseConfig, to_plain(config))
    old_vocab = ref.Vocab(**dataclasses.asdict(VOCAB))
    new = (FineRanker if kind == "fine" else CoarseRanker)(config, VOCAB, seed=3).eval()
    old = (ref.FineRanker if kind == "fine" else ref.CoarseRanker)(old_config, old_vocab, seed=3).eval()
    check_kind = "fine" if kind == "fine" else "coarse"
    old_version = _version(check_kind, to_plain(old.config), dataclasses.asdict(VOCAB), old.state_dict())
    assert model_version(new) == old_version
    user, items = _users(21), _items(22, (4, 9))
    with torch.no_grad():
        a = new(_with_dwell(user, 23), items)
        b = old(user, items)
    if kind == "fine":
        a, b = (a.click_logit, a.purchase_logit), (b.click_logit, b.purchase_logit)
    for x, y in zip(a if kind == "fine" else [a], b if kind == "fine" else [b], strict=True):
        assert torch.equal(x, y)


def _dwell_models() -> list[nn.Module]:
    return [
        CoarseRanker(dataclasses.replace(ALL_ON, dwell_buckets=8), VOCAB, seed=4),
        FineRanker(FineConfig(dwell_buckets=8), VOCAB, seed=4),
    ]


def _output(model: nn.Module, user: UserFeatures, items: ItemFeatures) -> torch.Tensor:
    out = model(user, items)
    return out if isinstance(out, torch.Tensor) else torch.stack([out.click_logit, out.purchase_logit])


@pytest.mark.parametrize("model", _dwell_models(), ids=["coarse", "fine"])
def test_dwell_reaches_the_model_and_trains_its_embedding(model):
    user, items = _with_dwell(_users(24, batch=6), 25), _items(26, (6, 8))
    _output(model.train(), user, items).square().mean().backward()
    grad = model.dwell.table.weight.grad
    used = torch.unique(model.dwell.buckets(user.history_dwell))
    assert len(used) == 8  # the dwell spread covers every bucket
    assert (grad[used].abs().sum(dim=1) > 0).all()
    model.eval()
    with torch.no_grad():
        start = _output(model, user, items)
        model.dwell.table.weight.copy_(torch.randn(8, model.dwell.table.weight.shape[1]))
        moved = _output(model, user, items)
        other = _output(model, _with_dwell(user, 27), items)
    # zero at initialisation: the model starts as without dwell; once trained, dwell moves scores
    torch.testing.assert_close(start, _output(model_without_dwell(model), user, items))
    assert not torch.allclose(moved, other)


def model_without_dwell(model: nn.Module) -> nn.Module:
    config = dataclasses.replace(model.config, dwell_buckets=None)
    return type(model)(config, VOCAB, seed=4).eval()


def test_dwell_buckets_are_log2_seconds():
    table = _dwell_models()[0].dwell
    seconds = torch.tensor([float("nan"), 0.0, 1.9, 2.0, 3.9, 20.0, 127.0, 128.0, 1e6])
    assert table.buckets(seconds).tolist() == [0, 0, 0, 1, 1, 4, 6, 7, 7]


def test_a_dwell_model_refuses_features_without_dwell_and_needs_nova():
    user, items = _users(28), _items(29, (4, 5))
    for model in _dwell_models():
        with pytest.raises(ValueError, match="history_dwell_separation"):
            model(user, items)
    with pytest.raises(ValueError, match="dwell_buckets"):
        CoarseConfig(dwell_buckets=8)
    with pytest.raises(ValueError, match="dwell_buckets"):
        CoarseConfig(nova=True, dwell_buckets=1)
