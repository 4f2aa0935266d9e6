"""The fused layout (every stage in the ingress) gives the split layout's pages, by handle and
HTTP, and swaps models in place; its plain-code core is ``serving.stages.FusedCascade``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.cascade import Cascade
from policies.rankers import load_scorer
from serving.pipeline import PageRequests, RecallStage
from serving.stages import CoarseStage, FineStage, FusedCascade
from simulator import SMALL


def _same(a, b) -> None:
    for name in ("arms", "items", "scores", "coarse_items", "coarse_versions", "fine_versions", "recall"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@st.composite
def page_requests(draw) -> PageRequests:
    n = draw(st.integers(1, 12))
    users = draw(st.lists(st.integers(0, SMALL.n_users - 1), min_size=n, max_size=n))
    exclude = draw(st.lists(st.lists(st.integers(0, SMALL.n_items - 1), max_size=30), min_size=n, max_size=n))
    arm = draw(st.sampled_from([None, "control", "treatment"]))
    day, session, page = draw(st.integers(0, 5)), draw(st.integers(0, 5)), draw(st.integers(0, 20))
    return PageRequests.of(users, day, session, page, exclude, arm=arm, trace=True)


@settings(deadline=None, max_examples=15)
@given(req=page_requests())
def test_layouts_give_the_same_pages(served, fused, req):
    _same(fused.rank(req), served.rank(req))
    body = {
        "user_id": int(req.users[0]),
        "day": int(req.days[0]),
        "session": int(req.sessions[0]),
        "exclude": [int(i) for i in req.exclude[0] if i >= 0],
        "trace": True,
    }
    split = requests.post(f"{served.url}/rank", json=body, timeout=30)
    assert split.status_code == 200
    assert requests.post(f"{fused.url}/rank", json=body, timeout=30).json() == split.json()


def test_fused_cascade_is_the_in_process_cascade(small_world, reference):
    """``FusedCascade.run_many``: calls of different arms in one batch, each ranked as
    ``Cascade.rank`` ranks it."""
    stages = {arm: CoarseStage(c.coarse, c.sizes.coarse) for arm, c in reference.items()}
    fused = FusedCascade(
        RecallStage(small_world), stages, FineStage(reference["control"].fine, SMALL.page_size)
    )
    calls = [("control", [1, 2, 3]), ("treatment", [4, 5]), ("control", [6])]
    arms = [arm for arm, _ in calls]
    users = [np.array(u) for _, u in calls]
    zeros = [np.zeros(len(u), dtype=np.int64) for u in users]
    no_exclude = [np.full((len(u), 0), -1, dtype=np.int64) for u in users]
    out = fused.run_many(arms, users, zeros, zeros, no_exclude)
    for (arm, call_users), (recall, fine) in zip(calls, out, strict=True):
        expected = reference[arm].rank(np.array(call_users), recall)
        np.testing.assert_array_equal(fine.items, expected.page)
        np.testing.assert_array_equal(fine.scores, expected.page_scores)


@pytest.mark.slow
def test_fused_swaps_in_place(fused, served, seeded_models, reference, small_world, small_features):
    """A swap of one arm's coarse model (and the fine model) in the fused ingress: /version
    reports it and the pages are the new models' pages; swapping back restores the old ones."""
    control = reference["control"]
    new = load_scorer(seeded_models["coarse_b"], small_world, small_features, "coarse")
    req = PageRequests.of(np.arange(30, 40), arm="control")
    before = fused.rank(req)
    try:
        fused.swap("control", seeded_models["coarse_b"])
        assert fused.versions()["arms"]["control"]["coarse"] == new.version
        recall = RecallStage(small_world).run(req.users, req.days, req.sessions)
        expected = Cascade(new, control.fine, control.sizes).rank(req.users, recall)
        np.testing.assert_array_equal(fused.rank(req).items, expected.page)
        assert served.versions()["arms"]["control"]["coarse"] == control.coarse.version  # another app
        fused.swap_fine("oracle")
        assert fused.versions()["fine"]["spec"] == "oracle"
    finally:
        fused.swap("control", seeded_models["coarse_a"])
        fused.swap_fine(seeded_models["fine"])
    _same(fused.rank(req), before)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["split", "fused"])
def test_a_coarse_score_is_served_in_both_layouts(
    layout, serve_port, app_args, seeded_models, reference, small_world, small_features
):
    """An arm with ``coarse_score = "gmv"`` serves the pages of the checkpoint scored for GMV,
    beside an arm of the same checkpoint scored by its task; a baseline cannot be swapped in."""
    from serving.app import start  # noqa: PLC0415

    coarse = seeded_models["coarse_a"]
    args = dataclasses.replace(
        app_args,
        arms={"task": {"coarse": coarse}, "gmv": {"coarse": coarse, "coarse_score": "gmv"}},
        assignment={"salt": "gmv-tests"},
        layout=layout,
    )
    gmv = load_scorer(coarse, small_world, small_features, "coarse", "gmv")
    req = PageRequests.of(np.arange(40, 52))
    recall = RecallStage(small_world).run(req.users, req.days, req.sessions)
    with start(args, name=f"gmv-{layout}", route_prefix=f"/gmv-{layout}") as app:
        pages = {arm: app.rank(dataclasses.replace(req, arm=arm)).items for arm in args.arms}
        with pytest.raises(ValueError, match="is not a checkpoint"):
            app.swap("gmv", "popularity")
    control = reference["control"]
    by_gmv = Cascade(gmv, control.fine, control.sizes)
    np.testing.assert_array_equal(pages["task"], control.rank(req.users, recall).page)
    np.testing.assert_array_equal(pages["gmv"], by_gmv.rank(req.users, recall).page)
    assert (pages["gmv"] != pages["task"]).any()  # the score changes the pages
