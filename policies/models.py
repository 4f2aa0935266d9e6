"""Ranking models of the cascade: the fine ranker (teacher) and the coarse ranker family.

Both see only model-visible features (``policies.batch``): item id, category, brand, price
bucket, is_new, and the user's id and logged behaviour sequence (with each behaviour's logged
dwell where the world logs it and the model asks for it: ``dwell_buckets``), never the world's
latent truth.

Padding: a history entry whose ``item_id`` is negative (e.g. -1) is padding; it is masked out
of every pooling, attention and match share, so its other fields may hold anything.

- ``FineRanker``: DIN-style target attention over the history plus explicit user×item crosses,
  an MLP and two heads (click, purchase given click).
- ``CoarseRanker``: a two-tower model, ``score(encode_user(user), encode_items(items))``, the
  item tower independent of the user so serving can precompute and cache it. Independent
  switches add an MLP scorer, an FM cross between history and target, NOVA attention in the
  user tower and FiBiNET's SENET + bilinear interaction in the item tower.

Initial weights are drawn from a local ``torch.Generator`` (``FineRanker(..., seed=s)``), never
from torch's global one; they equal torch's default initialisation after ``torch.manual_seed(s)``
(same draws in the same order), so a seed gives the weights it always gave.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from common.config import ConfigError, config, setting
from policies.batch import ItemFeatures, UserFeatures


def _check_positive_int(owner: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Embedding table sizes, taken from the world the models are trained on."""

    n_items: int
    n_users: int
    n_categories: int
    n_brands: int
    n_price_buckets: int = 10

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_positive_int("Vocab", field.name, getattr(self, field.name))


def _history_mask(history: ItemFeatures) -> Tensor:
    return history.item_id >= 0  # (B, H) True for real entries


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (B, H, D) over the real entries of mask (B, H); zero for an empty history."""
    weights = mask.to(x.dtype)  # (B, H)
    total = (x * weights[..., None]).sum(dim=1)  # (B, D)
    return total / weights.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, D)


def _linear(d_in: int, d_out: int, generator: torch.Generator, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` with torch's default initialisation (weight kaiming_uniform_(a=sqrt(5)),
    bias U(-1/sqrt(d_in), 1/sqrt(d_in))), drawn from ``generator``."""
    layer = skip_init(nn.Linear, d_in, d_out, bias=bias)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1 / math.sqrt(d_in)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def _embedding(n: int, dim: int, generator: torch.Generator) -> nn.Embedding:
    """An ``nn.Embedding`` with torch's default initialisation (N(0, 1)), drawn from ``generator``.
    The models redraw their tables with std 0.1 afterwards; this first draw is kept because it
    advances the generator exactly as torch's default initialisation did (unchanged weights)."""
    table = skip_init(nn.Embedding, n, dim)
    nn.init.normal_(table.weight, generator=generator)
    return table


def _mlp(sizes: Sequence[int], final_activation: bool, generator: torch.Generator) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(_linear(d_in, d_out, generator))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ItemEmbedding(nn.Module):
    """Per-field item embeddings (id, category, brand, price bucket, is_new), summed to (..., D).

    Negative item ids (padding) are looked up as id 0; callers mask them.
    """

    N_FIELDS = 5

    def __init__(self, vocab: Vocab, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.item_id = _embedding(vocab.n_items, dim, generator)
        self.category = _embedding(vocab.n_categories, dim, generator)
        self.brand = _embedding(vocab.n_brands, dim, generator)
        self.price_bucket = _embedding(vocab.n_price_buckets, dim, generator)
        self.is_new = _embedding(2, dim, generator)
        for table in (self.item_id, self.category, self.brand, self.price_bucket, self.is_new):
            nn.init.normal_(table.weight, std=0.1, generator=generator)

    def ids(self, items: ItemFeatures) -> Tensor:
        """The item-id embedding alone, (*S, D)."""
        return self.item_id(items.item_id.clamp(min=0))

    def fields(self, items: ItemFeatures) -> Tensor:
        """All field embeddings, (*S, N_FIELDS, D)."""
        return torch.stack(
            [
                self.ids(items),
                self.category(items.category.clamp(min=0)),
                self.brand(items.brand.clamp(min=0)),
                self.price_bucket(items.price_bucket.clamp(min=0)),
                self.is_new(items.is_new.round().long().clamp(0, 1)),
            ],
            dim=-2,
        )

    def forward(self, items: ItemFeatures) -> Tensor:
        return self.fields(items).sum(dim=-2)  # (*S, D)


class DwellEmbedding(nn.Module):
    """An embedding of each behaviour's logged dwell, bucketised by log2 seconds (bucket 0: under
    2 s, bucket b: [2^b, 2^(b+1)) s, the last open-ended). Zero at initialisation: a model starts
    as it would without dwell, and draws no random numbers for it (the other weights of a seed
    stay what they were)."""

    def __init__(self, n_buckets: int, dim: int) -> None:
        super().__init__()
        self.table = skip_init(nn.Embedding, n_buckets, dim)
        nn.init.zeros_(self.table.weight)

    def buckets(self, seconds: Tensor) -> Tensor:
        """Bucket (long) of each dwell; NaN (e.g. padding) and non-positive dwell go to bucket 0."""
        last = self.table.num_embeddings - 1
        return torch.log2(seconds.nan_to_num(1.0).clamp(min=1.0)).floor().long().clamp(max=last)

    def forward(self, user: UserFeatures) -> Tensor:
        """(B, H, D) for the user's history; the features must carry dwell."""
        if user.history_dwell is None:
            raise ValueError(
                "the model reads the behaviours' dwell (dwell_buckets) but the features carry none: "
                "a world logs it with history_dwell_separation > 0"
            )
        return self.table(self.buckets(user.history_dwell))


# ---------------------------------------------------------------------------------------------
# Fine ranker


@config
class FineConfig:
    """[model] of a fine training config."""

    dim: int = setting(32, ge=1)
    """Width of every embedding."""
    attention_hidden: int = setting(16, ge=1)
    """Hidden width of the DIN attention MLP (cost ~ linear in it)."""
    hidden: tuple[int, ...] = setting((128, 64), ge=1)
    """Widths of the shared MLP under the two heads (at least one layer)."""
    dwell_buckets: int | None = setting(None, ge=2)
    """The target attention's weights also see each behaviour's logged dwell, bucketised by log2
    seconds into this many buckets (e.g. 8: under 2 s .. 128 s and more); what it pools stays
    the behaviours' embeddings. None (the default): dwell is not read."""
    fine_signal: bool = setting(False, omitted_at_default=True)
    """The MLP also reads the world's pair-wise feature f_ui (``fine_signal_std`` > 0: what only
    the fine stage can afford, e.g. real-time and user x item cross features)."""

    def __post_init__(self) -> None:
        if not self.hidden:
            raise ConfigError("must name at least one layer width", key="hidden")


@dataclasses.dataclass(frozen=True)
class FineOutput:
    click_logit: Tensor  # (B, L)
    purchase_logit: Tensor  # (B, L) logit of purchase given click

    @property
    def pctr(self) -> Tensor:
        return torch.sigmoid(self.click_logit)  # (B, L)

    @property
    def pctcvr(self) -> Tensor:
        return self.pctr * torch.sigmoid(self.purchase_logit)  # (B, L)


@dataclasses.dataclass(frozen=True)
class FineUser:
    """A fine ranker's user-side tensors for B users (``FineRanker.encode_user``)."""

    history: ItemFeatures  # (B, H) the behaviour sequence's features
    mask: Tensor  # (B, H) True for real entries
    embedded: Tensor  # (B, H, D) the behaviours' embeddings (what attention pools)
    keys: Tensor  # (B, H, D) what the attention weights read (embeddings, plus dwell if read)
    mean: Tensor  # (B, D) mean of the real behaviours' embeddings
    user: Tensor  # (B, D) the user-id embedding


class TargetAttention(nn.Module):
    """DIN target attention: an MLP on [h, t, h-t, h*t] weighs each history item per target.

    Unlike DIN the weights are softmax-normalised over the real history entries (a stable scale
    whatever the history length); the last layer has no bias since softmax ignores a shift.
    """

    PAIR_BUDGET = 2**21  # elements of the pair tensor computed at once

    def __init__(self, dim: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = hidden
        self.mlp = nn.Sequential(
            _linear(4 * dim, hidden, generator), nn.ReLU(), _linear(hidden, 1, generator, bias=False)
        )

    def weights(self, history: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        D = history.shape[-1]
        first, rest = self.mlp[0], self.mlp[1:]
        # W [h, t, h-t, h*t] + b = (W_h + W_d) h + (W_t - W_d) t + b + W_p (h*t): only the last
        # term needs every (target, history) pair, a quarter of the direct first layer's cost
        w_h, w_t, w_d, w_p = first.weight.split(D, dim=1)  # 4 x (hidden, D)
        per_history = history @ (w_h + w_d).T  # (B, H, hidden)
        per_target = target @ (w_t - w_d).T + first.bias  # (B, L, hidden)
        pairs = (target[:, :, None, :] * history[:, None, :, :]) @ w_p.T  # (B, L, H, hidden)
        hidden = pairs + per_history[:, None] + per_target[:, :, None]  # (B, L, H, hidden)
        logits = rest(hidden).squeeze(-1)  # (B, L, H)
        logits = logits.masked_fill(~mask[:, None, :], torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=-1) * mask[:, None, :]  # (B, L, H), zero if H empty

    def forward(self, history: Tensor, target: Tensor, mask: Tensor, keys: Tensor | None = None) -> Tensor:
        """The attention-pooled history (B, L, D) per target; the weights come from ``keys``
        (B, H, D; default the history itself, e.g. history plus side information)."""
        keys = history if keys is None else keys
        # targets in chunks: the (B, L, H, hidden) pair tensor stays ~8 MB, below glibc's mmap
        # threshold (larger blocks are mapped and page-faulted afresh on every call)
        B, H, _ = history.shape
        step = max(1, self.PAIR_BUDGET // max(1, B * H * self.hidden))
        parts = [
            self.weights(keys, target[:, lo : lo + step], mask) @ history
            for lo in range(0, target.shape[1], step)
        ]
        return torch.cat(parts, dim=1) if parts else target.new_zeros(target.shape)  # (B, L, D)


class FineRanker(nn.Module):
    """The teacher: target attention + explicit crosses + MLP, heads for click and
    purchase-given-click. ``forward(user, items (B, L)) -> FineOutput``; ``seed`` seeds the
    initial weights."""

    N_CROSSES = 6

    def __init__(self, config: FineConfig, vocab: Vocab, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        D = config.dim
        g = torch.Generator().manual_seed(seed)
        self.embed = ItemEmbedding(vocab, D, g)
        self.user = _embedding(vocab.n_users, D, g)
        nn.init.normal_(self.user.weight, std=0.1, generator=g)
        self.attention = TargetAttention(D, config.attention_hidden, g)
        n_crosses = self.N_CROSSES + int(config.fine_signal)
        self.mlp = _mlp([5 * D + n_crosses, *config.hidden], final_activation=True, generator=g)
        self.click_head = _linear(config.hidden[-1], 1, g)
        self.purchase_head = _linear(config.hidden[-1], 1, g)
        self.dwell = None if config.dwell_buckets is None else DwellEmbedding(config.dwell_buckets, D)

    @staticmethod
    def _match_share(history: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Share of real history entries (B, H) equal to each target (B, L): (B, L)."""
        hits = (history[:, None, :] == target[:, :, None]) & mask[:, None, :]  # (B, L, H)
        return hits.sum(dim=-1) / mask.sum(dim=-1, keepdim=True).clamp(min=1)  # (B, L)

    def encode_user(self, user: UserFeatures) -> FineUser:
        """Everything the model computes from the user alone (``forward`` = ``score_items`` of
        it): a scorer may keep it for the user's later calls, with the same results."""
        hist = user.history
        mask = _history_mask(hist)  # (B, H)
        h = self.embed(hist)  # (B, H, D)
        u = self.user(user.user_id)  # (B, D)
        mean_h = _masked_mean(h, mask)  # (B, D)
        keys = h if self.dwell is None else h + self.dwell(user)  # (B, H, D); built after mean_h:
        # the order in which uses of h are built is the order its gradients are summed in
        return FineUser(history=hist, mask=mask, embedded=h, keys=keys, mean=mean_h, user=u)

    def score_items(
        self, user: FineUser, items: ItemFeatures, fine_signal: Tensor | None = None
    ) -> FineOutput:
        """The outputs for items (B, L) of encoded users (B,); ``fine_signal`` (B, L) is the
        world's pair-wise feature, read if the config says so."""
        hist, mask, h, mean_h, u = user.history, user.mask, user.embedded, user.mean, user.user
        t = self.embed(items)  # (B, L, D)
        B, L, D = t.shape
        interest = self.attention(h, t, mask, user.keys)  # (B, L, D)
        scale = 1.0 / math.sqrt(D)
        columns = [
            (t * mean_h[:, None, :]).sum(-1) * scale,
            (t * interest).sum(-1) * scale,
            self._match_share(hist.category, items.category, mask),
            self._match_share(hist.brand, items.brand, mask),
            self._match_share(hist.price_bucket, items.price_bucket, mask),
            self._match_share(hist.item_id, items.item_id, mask),
        ]
        if self.config.fine_signal:
            if fine_signal is None:
                raise ValueError(
                    "the model reads the fine signal ([model] fine_signal = true) but the features "
                    "carry none: a world has it with fine_signal_std > 0"
                )
            columns.append(fine_signal.to(t.dtype))
        crosses = torch.stack(columns, dim=-1)  # (B, L, N_CROSSES [+ 1])
        x = torch.cat(
            [u[:, None].expand(B, L, D), mean_h[:, None].expand(B, L, D), interest, t, interest * t, crosses],
            dim=-1,
        )  # (B, L, 5D + N_CROSSES [+ 1])
        z = self.mlp(x)  # (B, L, hidden[-1])
        return FineOutput(
            click_logit=self.click_head(z).squeeze(-1),  # (B, L)
            purchase_logit=self.purchase_head(z).squeeze(-1),  # (B, L)
        )

    def forward(
        self, user: UserFeatures, items: ItemFeatures, fine_signal: Tensor | None = None
    ) -> FineOutput:
        return self.score_items(self.encode_user(user), items, fine_signal)


# ---------------------------------------------------------------------------------------------
# Coarse ranker


class Similarity(enum.Enum):
    DOT = "dot"
    COSINE = "cosine"


@config
class CoarseConfig:
    """[model] of a coarse training config."""

    dim: int = setting(32, ge=1)
    """Width of embeddings and of both towers' outputs."""
    similarity: Similarity = Similarity.DOT
    """"dot" or "cosine" (L2-normalises both towers' outputs)."""
    temperature: float = setting(0.1, gt=0)
    """logits = cosine / temperature; used only with cosine and without mlp_scorer (the MLP
    learns its own scale)."""
    mlp_scorer: bool = False
    """An MLP on [u, v, u*v] instead of the final dot/cosine."""
    mlp_hidden: int = setting(64, ge=1)
    """Hidden width of that MLP (used only with mlp_scorer)."""
    fm_cross: bool = False
    """+ w_task * mean_h <e_h, e_t>, computed as <mean_h e_h, e_t>: the user side carries the
    pooled history embedding, the item side the target's embedding."""
    nova: bool = False
    """NOVA self-attention over the history in the user tower."""
    dwell_buckets: int | None = setting(None, ge=2)
    """With nova: NOVA's queries and keys also see each behaviour's logged dwell (side
    information), bucketised by log2 seconds into this many buckets (e.g. 8: under 2 s .. 128 s
    and more); the values stay item-id embeddings. None (the default): dwell is not read."""
    senet_bilinear: bool = False
    """FiBiNET SENET + bilinear interaction in the item tower."""
    senet_reduction: int = setting(2, ge=1)
    """SENET squeeze ratio (used only with senet_bilinear)."""
    n_tasks: int = setting(3, ge=1)
    """One logit per task: exposure, click, purchase."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature):
            raise ConfigError(f"must be finite, got {self.temperature!r}", key="temperature")
        if self.dwell_buckets is not None and not self.nova:
            raise ConfigError("is read by NOVA's attention: needs nova = true", key="dwell_buckets")


class NovaAttention(nn.Module):
    """NOVA-BERT style self-attention over the history, pooled to one vector.

    Queries and keys come from the fused embedding (id + side information: the item's fields,
    and its logged dwell with ``dwell_buckets``); values come from the item-id embedding alone,
    so side information steers *where* to attend but the output is built from id embeddings
    only. No positional encoding: order-invariant.
    """

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.query = _linear(dim, dim, generator, bias=False)
        self.key = _linear(dim, dim, generator, bias=False)
        self.value = _linear(dim, dim, generator, bias=False)
        self.out = _linear(dim, dim, generator)

    def weights(self, fused: Tensor, mask: Tensor) -> Tensor:
        q, k = self.query(fused), self.key(fused)  # (B, H, D)
        logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, H)
        logits = logits.masked_fill(~mask[:, None, :], torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=-1)  # (B, H, H)

    def forward(self, fused: Tensor, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The pooled history (B, D) and each behaviour's attention share (B, H): the attention
        the real behaviours' queries give it, averaged over them (it sums to 1 over a non-empty
        history, is 1/n everywhere at uniform attention, and is 0 for padding)."""
        weights = self.weights(fused, mask)  # (B, H, H)
        pooled = self.out(_masked_mean(weights @ self.value(ids), mask))  # (B, D)
        share = _masked_mean(weights, mask)  # (B, H)
        return pooled, share


class SENet(nn.Module):
    """FiBiNET squeeze-excitation: one weight in (0, 1) per field (sigmoid excitation)."""

    def __init__(self, n_fields: int, reduction: int, generator: torch.Generator) -> None:
        super().__init__()
        squeezed = max(1, n_fields // reduction)
        self.excite = nn.Sequential(
            _linear(n_fields, squeezed, generator), nn.ReLU(), _linear(squeezed, n_fields, generator)
        )

    def weights(self, fields: Tensor) -> Tensor:
        return torch.sigmoid(self.excite(fields.mean(dim=-1)))  # (*S, F)

    def forward(self, fields: Tensor) -> Tensor:
        return fields * self.weights(fields)[..., None]  # (*S, F, D)


class BilinearInteraction(nn.Module):
    """FiBiNET 'field-all' bilinear interaction: p_ij = (v_i W) * v_j for every field pair i < j,
    in ``itertools.combinations`` order (slices, not an index gather: its backward is ~5x
    cheaper)."""

    def __init__(self, n_fields: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim) + 0.01 * torch.randn(dim, dim, generator=generator))
        self.n_fields = n_fields

    @property
    def n_pairs(self) -> int:
        return self.n_fields * (self.n_fields - 1) // 2

    def forward(self, fields: Tensor) -> Tensor:
        vw = fields @ self.weight  # (*S, F, D)
        pairs = [vw[..., i : i + 1, :] * fields[..., i + 1 :, :] for i in range(self.n_fields - 1)]
        return torch.cat(pairs, dim=-2)  # (*S, P, D)


class InteractionScorer(nn.Module):
    """An MLP on [u, v, u*v] per (user, item) pair, (B, D) × (B|1, N, D) -> (B, N, T).

    The first layer is evaluated in factored form, W_u u + (W_v + diag(u) W_uv)^T v: one
    (N, D) @ (D, hidden) product per user and no (B, N, 3D) concatenation; exactly equal to
    applying ``first`` to the concatenation.
    """

    def __init__(self, dim: int, hidden: int, n_out: int, generator: torch.Generator) -> None:
        super().__init__()
        self.first = _linear(3 * dim, hidden, generator)
        self.rest = nn.Sequential(nn.ReLU(), _linear(hidden, n_out, generator))

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        D = u.shape[-1]
        w = self.first.weight.t()  # (3D, hidden)
        w_u, w_v, w_uv = w[:D], w[D : 2 * D], w[2 * D :]  # (D, hidden) each
        per_user = w_v + u[:, :, None] * w_uv  # (B, D, hidden)
        bias = u @ w_u + self.first.bias  # (B, hidden)
        return self.rest(v @ per_user + bias[:, None, :])  # (B, N, n_out)


class CoarseRanker(nn.Module):
    """Two-tower coarse ranker: ``score(encode_user(user), encode_items(items))``.

    Vector layouts (D = config.dim, T = config.n_tasks):
    - user side (B, D_u): the user tower, T·D per-task projections (one D with mlp_scorer),
      then, with fm_cross, the mean history embedding (D);
    - item side (*S, D_i): the item tower (D), then, with fm_cross, the item's embedding (D).
    With COSINE the tower parts are L2-normalised at encoding time. ``seed`` seeds the initial
    weights.
    """

    def __init__(self, config: CoarseConfig, vocab: Vocab, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        D, T = config.dim, config.n_tasks
        n_fields = ItemEmbedding.N_FIELDS
        g = torch.Generator().manual_seed(seed)
        self.embed = ItemEmbedding(vocab, D, g)
        # user tower
        self.user = _embedding(vocab.n_users, D, g)
        nn.init.normal_(self.user.weight, std=0.1, generator=g)
        self.nova = NovaAttention(D, g) if config.nova else None
        self.user_mlp = _mlp([2 * D, 2 * D, D], final_activation=False, generator=g)
        self.task_projection = None if config.mlp_scorer else _linear(D, T * D, g)
        # item tower
        if config.senet_bilinear:
            self.senet = SENet(n_fields, config.senet_reduction, g)
            self.bilinear = BilinearInteraction(n_fields, D, g)
            item_in = 2 * self.bilinear.n_pairs * D
        else:
            self.senet, self.bilinear = None, None
            item_in = n_fields * D
        self.item_mlp = _mlp([item_in, 2 * D, D], final_activation=False, generator=g)
        # scorer
        self.scorer = None
        if config.mlp_scorer:
            self.scorer = InteractionScorer(D, config.mlp_hidden, T, g)
        self.task_bias = nn.Parameter(torch.zeros(T))
        self.fm_weight = nn.Parameter(torch.ones(T)) if config.fm_cross else None
        self.dwell = None if config.dwell_buckets is None else DwellEmbedding(config.dwell_buckets, D)

    @property
    def user_tower_dim(self) -> int:
        return self.config.dim * (1 if self.config.mlp_scorer else self.config.n_tasks)

    @property
    def user_dim(self) -> int:
        return self.user_tower_dim + (self.config.dim if self.config.fm_cross else 0)

    @property
    def item_dim(self) -> int:
        return self.config.dim * (2 if self.config.fm_cross else 1)

    def _normalise(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.config.similarity is Similarity.COSINE else x

    def nova_side(self, user: UserFeatures, fused: Tensor) -> Tensor:
        """What NOVA's queries and keys read (B, H, D): the history's fused embeddings ``fused``,
        plus the logged dwell's with ``dwell_buckets``."""
        return fused if self.dwell is None else fused + self.dwell(user)

    def encode_user(self, user: UserFeatures) -> Tensor:
        """The online user side, (B, user_dim)."""
        D, T = self.config.dim, self.config.n_tasks
        hist = user.history
        mask = _history_mask(hist)  # (B, H)
        fused = self.embed(hist)  # (B, H, D)
        if self.nova is not None:
            pooled, share = self.nova(self.nova_side(user, fused), self.embed.ids(hist), mask)
            history = (share[..., None] * fused).sum(dim=1)  # (B, D) the denoised sequence
        else:
            pooled = history = _masked_mean(fused, mask)  # (B, D)
        u = self.user_mlp(torch.cat([self.user(user.user_id), pooled], dim=-1))  # (B, D)
        if self.task_projection is not None:
            u = self.task_projection(u).view(-1, T, D)  # (B, T, D)
        parts = [self._normalise(u).flatten(1)]  # (B, user_tower_dim)
        if self.config.fm_cross:
            parts.append(history)  # (B, D)
        return torch.cat(parts, dim=-1)  # (B, user_dim)

    def encode_items(self, items: ItemFeatures) -> Tensor:
        """The precomputable item side, (*S, item_dim); a function of the items alone."""
        fields = self.embed.fields(items)  # (*S, F, D)
        if self.senet is not None and self.bilinear is not None:
            pairs = [self.bilinear(fields), self.bilinear(self.senet(fields))]  # 2 × (*S, P, D)
            x = torch.cat(pairs, dim=-2).flatten(-2)  # (*S, 2PD)
        else:
            x = fields.flatten(-2)  # (*S, FD)
        parts = [self._normalise(self.item_mlp(x))]  # (*S, D)
        if self.config.fm_cross:
            parts.append(fields.sum(dim=-2))  # (*S, D) the same embedding the history uses
        return torch.cat(parts, dim=-1)  # (*S, item_dim)

    def score(self, user_vec: Tensor, item_vecs: Tensor) -> Tensor:
        """Logits (B, N, T) for user_vec (B, D_u) against item_vecs (N, D_i) shared by all
        requests, or (B, L, T) against per-request item_vecs (B, L, D_i)."""
        D, T = self.config.dim, self.config.n_tasks
        B = user_vec.shape[0]
        if item_vecs.dim() == 2:
            item_vecs = item_vecs.unsqueeze(0)  # (1, N, D_i)
        u, s = user_vec[:, : self.user_tower_dim], user_vec[:, self.user_tower_dim :]
        v, e = item_vecs[..., :D], item_vecs[..., D:]  # (B|1, N, D), (B|1, N, D or 0)
        if self.scorer is not None:
            logits = self.scorer(u, v)  # (B, N, T)
        else:
            logits = v @ u.view(B, T, D).transpose(1, 2)  # (B, N, T)
            if self.config.similarity is Similarity.COSINE:
                logits = logits / self.config.temperature
        logits = logits + self.task_bias
        if self.fm_weight is not None:
            logits = logits + (e @ s[:, :, None]) * self.fm_weight  # (B, N, 1) * (T,)
        return logits  # (B, N, T)

    def forward(self, user: UserFeatures, items: ItemFeatures) -> Tensor:
        """Logits (B, L, T) for per-request items (B, L)."""
        return self.score(self.encode_user(user), self.encode_items(items))
