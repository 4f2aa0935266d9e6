"""The HTTP API and its /openapi.json agree (both layouts): bodies generated from the live
request schema (valid ones with boundary and integral-float ids, and wrong types, out-of-range
values, extra and missing fields, unparsable bytes) are answered 200 exactly when the schema
accepts them, never 5xx, always with a status the operation declares and a body its declared
schema accepts."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

EXAMPLES = 150
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module", params=["split", "fused"])
def app(request):
    return request.getfixturevalue("served" if request.param == "split" else "fused")


@pytest.fixture(scope="module")
def spec(app) -> dict:
    return requests.get(f"{app.url}/openapi.json", timeout=10).json()


def validator(spec: dict, schema: dict) -> Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in ``spec``."""
    return Draft202012Validator({"allOf": [schema], "components": spec["components"]})


def request_schema(spec: dict) -> dict:
    ref = spec["paths"]["/rank"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


SCALARS = {"boolean": st.booleans(), "null": st.none()}


def valid(schema: dict) -> st.SearchStrategy:
    """Values the (pydantic-made) JSON schema accepts, boundaries and integral floats included."""
    if "anyOf" in schema:
        return st.one_of([valid(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "integer":
        lo = schema["minimum"]
        hi = schema["maximum"] if "maximum" in schema else schema["exclusiveMaximum"] - 1
        ints = st.one_of(st.sampled_from([lo, hi]), st.integers(lo, min(hi, lo + 100)), st.integers(lo, hi))
        exact = ints.filter(lambda i: abs(i) < 2**53)  # floats that are exactly this integer
        return st.one_of(ints, exact.map(float))
    if kind in SCALARS:
        return SCALARS[kind]
    if kind == "array":
        longest = schema.get("maxItems", 20)
        items = valid(schema["items"])
        return st.one_of(
            st.lists(items, max_size=min(longest, 20)), st.lists(items, min_size=longest, max_size=longest)
        )
    assert kind == "object", schema
    props = schema["properties"]
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {k: valid(v) for k, v in props.items() if k in required},
        optional={k: valid(v) for k, v in props.items() if k not in required},
    )


ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def bodies(draw, schema: dict):
    """A valid body, one with a field replaced, removed or added, or any JSON value."""
    body = draw(valid(schema))
    how = draw(st.sampled_from(["valid", "replace", "remove", "add", "any"]))
    if how == "replace":
        body[draw(st.sampled_from(sorted(schema["properties"])))] = draw(ANY_JSON)
    elif how == "remove":
        body.pop(draw(st.sampled_from(sorted(body))), None)
    elif how == "add":
        body[draw(st.text(min_size=1, max_size=8))] = draw(ANY_JSON)
    elif how == "any":
        body = draw(ANY_JSON)
    return body


def check_answer(spec: dict, operation: dict, response: requests.Response) -> None:
    """No 5xx; the status is declared; the body conforms to the declared schema of its media type."""
    assert response.status_code < 500, response.text
    declared = operation["responses"]
    assert str(response.status_code) in declared, (response.status_code, sorted(declared))
    content = declared[str(response.status_code)]["content"]
    media = response.headers["content-type"].split(";")[0]
    assert media in content, (media, sorted(content))
    body = response.json() if media == "application/json" else response.text
    validator(spec, content[media]["schema"]).validate(body)


@pytest.mark.slow
def test_generated_bodies_get_the_answers_the_schema_promises(app, spec):
    schema = request_schema(spec)
    accepts = validator(spec, schema)
    operation = spec["paths"]["/rank"]["post"]
    session = requests.Session()
    seen = set()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies(schema))
    def run(body) -> None:
        response = session.post(f"{app.url}/rank", data=json.dumps(body), headers=JSON, timeout=30)
        check_answer(spec, operation, response)
        assert (response.status_code == 200) == accepts.is_valid(body), (body, response.text)
        seen.add(response.status_code)

    run()
    assert seen == {200, 422}  # both kinds were generated


RAW = [
    (b'{"user_id": "\xc3\x28"}', "application/json", 400),  # not UTF-8
    (b'{"user_id": 3', "application/json", 422),  # not JSON
    (b"", "application/json", 422),  # no body
    (b'{"user_id": 3}', "text/plain", 422),  # not declared JSON
]


@pytest.mark.parametrize(("data", "media", "status"), RAW)
def test_unparsable_bodies_get_declared_answers(app, spec, data, media, status):
    response = requests.post(f"{app.url}/rank", data=data, headers={"content-type": media}, timeout=10)
    assert response.status_code == status
    check_answer(spec, spec["paths"]["/rank"]["post"], response)


def test_integral_floats_are_integers(app):
    def post(body: dict) -> requests.Response:
        return requests.post(f"{app.url}/rank", json=body, timeout=10)

    as_int = post({"user_id": 597, "day": 2, "exclude": [1, 2]})
    as_float = post({"user_id": 597.0, "day": 2.0, "exclude": [1.0, 2]})
    assert as_int.status_code == as_float.status_code == 200
    assert as_float.json() == as_int.json()
    assert as_float.json()["user_id"] == 597 and isinstance(as_float.json()["day"], int)
    for bad in ({"user_id": 597.5}, {"user_id": True}, {"user_id": 3, "exclude": [False]}):
        response = post(bad)
        assert response.status_code == 422 and "valid integer" in response.text


def test_other_paths_and_methods_answer_as_documented(app, spec):
    responses = spec["components"]["responses"]
    for response, name in (
        (requests.get(f"{app.url}/rank", timeout=10), "MethodNotAllowed"),
        (requests.get(f"{app.url}/nowhere", timeout=10), "NotFound"),
    ):
        assert response.status_code == {"MethodNotAllowed": 405, "NotFound": 404}[name]
        schema = responses[name]["content"]["application/json"]["schema"]
        validator(spec, schema).validate(response.json())
    for path, method in (("/healthz", "get"), ("/version", "get")):
        operation = spec["paths"][path][method]
        assert "503" in operation["responses"]
        check_answer(spec, operation, requests.get(f"{app.url}{path}", timeout=10))
