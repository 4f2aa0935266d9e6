"""The cascade served on Ray Serve (one app for the module, SMALL world): invariants of every
page, the same pages as the in-process cascade (handle, HTTP and ``run_sessions``), stable
arms, 4xx for bad input, and in-place model swaps under load."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from ray import serve

from policies.cascade import Cascade, run_sessions
from policies.rankers import load_scorer
from serving.pipeline import PageRequests, exclusion_mask
from simulator import SMALL, SessionKeys
from simulator.recall import Recall


@pytest.fixture(scope="module")
def recall_of(small_world):
    recall = Recall(small_world)
    return lambda users, day=0, session=0: recall(SessionKeys.of(users, day, session)).items


@st.composite
def page_requests(draw, max_users: int = 1):
    """Requests of random users, days, sessions and pages, excluding a random share of the
    recall set (what earlier pages showed) and a few random pool items."""
    n = draw(st.integers(1, max_users))
    users = draw(st.lists(st.integers(0, SMALL.n_users - 1), min_size=n, max_size=n))
    day, session, page = draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 29))
    share = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    seed = draw(st.integers(0, 2**16))
    return users, day, session, page, share, seed


def _build(recall_of, users, day, session, page, share, seed, **options) -> PageRequests:
    rng = np.random.default_rng(seed)
    recall = recall_of(users, day, session)
    exclude = [  # at most the recall size: longer lists are refused
        np.concatenate([rng.integers(0, SMALL.n_items, 3), row[rng.random(len(row)) < share]])[: len(row)]
        for row in recall
    ]
    return PageRequests.of(users, day, session, page, exclude, **options)


def test_health_version_and_openapi(served, reference, app_args):
    assert requests.get(f"{served.url}/healthz", timeout=10).json() == {"status": "ok"}
    info = requests.get(f"{served.url}/version", timeout=10).json()
    assert info["arms"]["control"]["coarse"] == reference["control"].coarse.version
    assert info["arms"]["treatment"] == {
        "coarse": "popularity",
        "spec": "popularity",
        "coarse_size": 40,
        "share": 0.5,
    }
    assert info["fine"]["version"] == reference["control"].fine.version
    assert info["world"]["n_users"] == SMALL.n_users
    assert info["assignment"] == {"salt": "serving-tests", "layer": "default"}
    schema = requests.get(f"{served.url}/openapi.json", timeout=10).json()
    assert {"/rank", "/healthz", "/version"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["RankRequest"]
    assert body["additionalProperties"] is False
    assert body["properties"]["user_id"]["exclusiveMaximum"] == SMALL.n_users


@settings(deadline=None, max_examples=20)
@given(request=page_requests())
def test_page_invariants(served, recall_of, app_args, request):
    """page ⊆ fine input (coarse top-C) ⊆ recall set, no duplicates, nothing excluded,
    sizes as configured, and the same request gives the same page."""
    req = _build(recall_of, *request, trace=True)
    res = served.rank(req)
    recall, exclude = recall_of(req.users, req.days[0], req.sessions[0])[0], req.exclude[0]
    coarse = res.coarse_items[0][res.coarse_items[0] >= 0]
    page = res.items[0][res.items[0] >= 0]
    np.testing.assert_array_equal(res.recall[0], recall)
    assert set(page) <= set(coarse) <= set(recall)
    assert len(set(page)) == len(page) and len(set(coarse)) == len(coarse)
    assert not set(coarse) & set(exclude)
    candidates = len(recall) - int(exclusion_mask(recall[None], exclude[None]).sum())
    assert len(coarse) == min(app_args.coarse_size(str(res.arms[0])), candidates)
    assert len(page) == min(SMALL.page_size, len(coarse))
    scores = res.scores[0][: len(page)]
    assert np.all(np.diff(scores) <= 0) and np.isnan(res.scores[0][len(page) :]).all()
    again = served.rank(req)
    np.testing.assert_array_equal(again.items, res.items)
    np.testing.assert_array_equal(again.scores, res.scores)
    assert again.arms.tolist() == res.arms.tolist()


def test_a_users_arm_never_changes(served, app_args):
    experiment = app_args.experiment()
    users = np.arange(0, SMALL.n_users, 5)
    expected = [experiment.arm_of(int(u)) for u in users]
    assert 0.4 < np.mean(np.array(expected) == "control") < 0.6
    for day, session, page in [(0, 0, 0), (1, 2, 3), (7, 0, 12)]:
        res = served.rank(PageRequests.of(users, day, session, page))
        assert res.arms.tolist() == expected
    for user in users[:5]:
        body = {"user_id": int(user), "day": 3, "page": 1}
        assert requests.post(f"{served.url}/rank", json=body, timeout=10).json()["arm"] == expected[user // 5]
    forced = served.rank(PageRequests.of(users, arm="treatment"))
    assert set(forced.arms) == {"treatment"}


@settings(deadline=None, max_examples=12)
@given(request=page_requests(max_users=8))
def test_serve_matches_the_in_process_cascade(served, reference, recall_of, app_args, request):
    """Handle and HTTP return exactly the pages (and scores) ``Cascade.rank`` computes for
    each user's arm."""
    req = _build(recall_of, *request)
    res = served.rank(req)
    recall = recall_of(req.users, req.days, req.sessions)
    mask = exclusion_mask(recall, req.exclude)
    arms = app_args.experiment().assign(req.users)
    for a, arm in enumerate(app_args.arms):
        rows = np.flatnonzero(arms == a)
        if not len(rows):
            continue
        cascade = reference[arm]
        expected = cascade.rank(req.users[rows], recall[rows], mask[rows])
        assert set(res.arms[rows]) == {arm}
        np.testing.assert_array_equal(res.items[rows], expected.page)
        np.testing.assert_array_equal(res.scores[rows], expected.page_scores)
        width = expected.coarse_items.shape[1]
        np.testing.assert_array_equal(res.coarse_items[rows, :width], expected.coarse_items)
        assert set(res.coarse_versions[rows]) == {cascade.coarse.version}
        assert set(res.fine_versions[rows]) == {cascade.fine.version}

    body = {
        "user_id": int(req.users[0]),
        "day": int(req.days[0]),
        "session": int(req.sessions[0]),
        "page": int(req.pages[0]),
        "exclude": [int(i) for i in req.exclude[0] if i >= 0],
        "trace": True,
    }
    http = requests.post(f"{served.url}/rank", json=body, timeout=30).json()
    shown = res.items[0] >= 0
    assert http["items"] == res.items[0][shown].tolist()
    assert http["scores"] == res.scores[0][shown].tolist()
    assert http["arm"] == res.arms[0] and http["page"] == body["page"]
    assert http["versions"] == {"coarse": res.coarse_versions[0], "fine": res.fine_versions[0]}
    assert http["trace"]["recall"] == recall[0].tolist()
    assert http["trace"]["fine"] == http["items"]
    assert http["trace"]["coarse"] == [int(i) for i in res.coarse_items[0] if i >= 0]


@pytest.mark.slow
def test_run_sessions_through_serve(served, reference, small_sim, some_keys, app_args):
    """Whole sessions through Serve: forced per arm, and assigned by the ingress."""
    keys = some_keys.take(np.arange(80))
    arm_of = app_args.experiment().assign(keys.user)
    for a, arm in enumerate(app_args.arms):
        local = run_sessions(small_sim, reference[arm], keys)
        remote = run_sessions(small_sim, served.ranker(arm=arm, chunk=40), keys)
        for name in ("pages", "impressions", "clicks", "purchases", "gmv"):
            np.testing.assert_array_equal(getattr(remote.totals, name), getattr(local.totals, name))
        np.testing.assert_array_equal(remote.first_coarse_items, local.first_coarse_items)
        mine = np.flatnonzero(arm_of == a)
        assigned = run_sessions(small_sim, served.ranker(chunk=40), keys.take(mine))
        np.testing.assert_array_equal(assigned.totals.clicks, local.totals.clicks[mine])
        np.testing.assert_array_equal(assigned.totals.pages, local.totals.pages[mine])


BAD_BODIES = [
    ({"user_id": SMALL.n_users}, "less than"),
    ({"user_id": -1}, "greater than or equal"),
    ({"user_id": "3"}, "valid integer"),
    ({"user_id": 3.5}, "valid integer"),
    ({"user_id": None}, "valid integer"),
    ({"user_id": 3, "page": -1}, "greater than or equal"),
    ({"user_id": 3, "day": "monday"}, "valid integer"),
    ({"user_id": 3, "exclude": list(range(SMALL.recall_size + 1))}, "at most"),
    ({"user_id": 3, "exclude": [SMALL.n_items]}, "less than"),
    ({"user_id": 3, "exclude": "1,2"}, "valid list"),
    ({"user_id": 3, "trace": "yes"}, "valid boolean"),
    ({"user_id": 3, "arm": "nope"}, "control"),
    ({"user_id": 3, "colour": "red"}, "Extra inputs"),
    ({}, "Field required"),
    ([3], "valid dictionary"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_input_is_a_4xx_with_a_message(served, body, message):
    response = requests.post(f"{served.url}/rank", json=body, timeout=10)
    assert 400 <= response.status_code < 500
    assert message in response.text


def test_malformed_http_requests_are_4xx(served):
    assert requests.post(f"{served.url}/rank", data="{not json", timeout=10).status_code == 422
    assert requests.get(f"{served.url}/rank", timeout=10).status_code == 405
    assert requests.get(f"{served.url}/nowhere", timeout=10).status_code == 404


def test_bad_batched_requests_raise_value_error(served):
    with pytest.raises(ValueError, match="user ids"):
        served.rank(PageRequests.of([SMALL.n_users]))
    with pytest.raises(ValueError, match="unknown arm"):
        served.rank(PageRequests.of([1], arm="nope"))


@pytest.mark.slow
def test_swap_in_place_while_serving(
    served, seeded_models, reference, small_world, small_features, recall_of
):
    """Swapping an arm's coarse model under load: every request in flight succeeds, each
    reports one version and is exactly the page of that version's scorer, the replica is the
    same process (reconfigure, not a restart), and /version reports the new model."""
    control = reference["control"]
    new = load_scorer(seeded_models["coarse_b"], small_world, small_features, "coarse")
    old_version = control.coarse.version
    assert new.version != old_version
    expected = {old_version: control, new.version: Cascade(new, control.fine, control.sizes)}
    users = np.arange(40, 56)
    req = PageRequests.of(users, arm="control")
    recall = recall_of(users)
    pages = {v: c.rank(users, recall).page for v, c in expected.items()}
    coarse = serve.get_deployment_handle("coarse-control", app_name=served.name)
    replica = coarse.status.remote().result()["replica"]

    results, errors, stop = [], [], threading.Event()

    def by_handle() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                results.append(served.rank(req))
            except Exception as err:  # collected and asserted below
                errors.append(err)

    def by_http() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            r = requests.post(f"{served.url}/rank", json={"user_id": 40, "arm": "control"}, timeout=30)
            (results if r.status_code == 200 else errors).append(r.json() if r.ok else r.text)

    threads = [threading.Thread(target=by_handle) for _ in range(3)] + [threading.Thread(target=by_http)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        served.swap("control", seeded_models["coarse_b"])
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        assert not errors
        seen = set()
        for res in results:
            if isinstance(res, dict):  # HTTP: user 40 is the first row of the batched request
                seen.add(res["versions"]["coarse"])
                assert res["items"] == pages[res["versions"]["coarse"]][0].tolist()
                continue
            (version,) = set(res.coarse_versions)
            seen.add(version)
            np.testing.assert_array_equal(res.items, pages[version])
        assert seen == {old_version, new.version}
        assert served.versions()["arms"]["control"]["coarse"] == new.version
        assert coarse.status.remote().result()["replica"] == replica
    finally:
        served.swap("control", seeded_models["coarse_a"])
    assert served.versions()["arms"]["control"]["coarse"] == old_version


def test_swap_refuses_a_checkpoint_of_the_wrong_kind(served, seeded_models):
    with pytest.raises(ValueError, match="fine model, expected a coarse"):
        served.swap("control", seeded_models["fine"])
    assert served.versions()["arms"]["control"]["spec"] == seeded_models["coarse_a"]
