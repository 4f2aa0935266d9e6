"""The config layer: strict types from the hints, bounds, error messages that name file, table
and key, TOML syntax errors, the TOML round trip, overrides and relative paths."""

from __future__ import annotations

import enum
import os
import tomllib
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.config import (
    ConfigError,
    apply_overrides,
    config,
    dumps_toml,
    from_mapping,
    load_toml,
    overrides,
    parse_override,
    setting,
    to_plain,
)


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@config
class Inner:
    count: int = setting(1, ge=1)
    """An integer >= 1."""
    share: float = setting(0.5, ge=0, le=1)
    """A number in [0, 1]."""
    on: bool = False
    """A boolean."""
    widths: tuple[int, ...] = setting((4,), ge=1)
    """Integers >= 1."""


@config
class Outer:
    name: str
    """Required."""
    inner: Inner = Inner()
    colour: Colour = Colour.RED
    mode: Literal["fast", "slow"] = "fast"
    limit: int | None = None
    tables: dict[str, Inner] = setting(default_factory=dict)
    spec: str | tuple[str, str] = "x"
    file: str = setting("", path=True, keep=("none",))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": 5}, r"^name: must be a string, got 5$"),
        ({"name": "a", "inner": {"on": "false"}}, r"^\[inner\] on: must be true or false \(a TOML boolean\)"),
        ({"name": "a", "inner": {"on": 1}}, r"^\[inner\] on: must be true or false"),
        ({"name": "a", "inner": {"count": True}}, r"^\[inner\] count: must be an integer, got True$"),
        ({"name": "a", "inner": {"count": 2.0}}, r"^\[inner\] count: must be an integer, got 2\.0$"),
        ({"name": "a", "inner": {"count": 0}}, r"^\[inner\] count: must be >= 1, got 0$"),
        ({"name": "a", "inner": {"share": "0.5"}}, r"^\[inner\] share: must be a number"),
        ({"name": "a", "inner": {"share": 1.5}}, r"^\[inner\] share: must be >= 0 and <= 1, got 1\.5$"),
        ({"name": "a", "inner": {"widths": [4, 0]}}, r"^\[inner\] widths: must be >= 1"),
        ({"name": "a", "inner": {"widths": 4}}, r"^\[inner\] widths: must be a list"),
        ({"name": "a", "inner": {"widths": [4, "8"]}}, r"^\[inner\] widths: entry 1: must be an integer"),
        ({"name": "a", "inner": 3}, r"^inner: must be a table, got 3$"),
        ({"name": "a", "colour": "green"}, r"^colour: must be one of \['red', 'blue'\], got 'green'$"),
        ({"name": "a", "mode": "medium"}, r"^mode: must be one of \['fast', 'slow'\]"),
        ({"name": "a", "limit": "3"}, r"^limit: must be an integer, got '3'$"),
        ({"name": "a", "tables": {"t": {"count": -1}}}, r"^\[tables\.t\] count: must be >= 1"),
        ({"name": "a", "tables": {"t": []}}, r"^\[tables\] t: must be a table"),
        ({"name": "a", "spec": ["a", "b", "c"]}, r"^spec: must be one of"),
        ({"name": "a", "nmae": "b"}, r"^nmae: unknown key; did you mean 'name'\?$"),
        ({"name": "a", "inner": {"cuont": 2}}, r"^\[inner\] cuont: unknown key; did you mean 'count'\?$"),
        ({"name": "a", "zzz": 1}, r"^zzz: unknown key; known: \["),
        ({}, r"^name: missing"),
    ],
)
def test_values_are_checked_against_their_type_hints(raw, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(Outer, raw)


def test_accepted_values_are_converted():
    built = from_mapping(Outer, {"name": "a", "inner": {"share": 1, "widths": [2, 3]}, "colour": "blue"})
    assert built.inner == Inner(share=1, widths=(2, 3))
    assert built.colour is Colour.BLUE
    assert from_mapping(Outer, {"name": "a", "spec": ["p", "q"]}).spec == ("p", "q")
    assert from_mapping(Outer, {"name": "a", "limit": 7}).limit == 7


def test_python_construction_is_checked_and_converted_the_same_way():
    assert Outer(name="a", inner={"widths": [5]}).inner.widths == (5,)
    with pytest.raises(ConfigError, match=r"^on: must be true or false"):
        Inner(on="yes")


def test_a_config_error_is_a_value_error():
    with pytest.raises(ValueError, match="count"):
        Inner(count=0)


def test_load_toml_names_the_file_table_and_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[top]\nname = "a"\n[top.inner]\ncount = 0\n')
    with pytest.raises(ConfigError, match=rf"^{path} \[top\.inner\] count: must be >= 1, got 0$"):
        load_toml(path, Outer, table="top")
    with pytest.raises(ConfigError, match=rf"^{path}: has no \[other\] table$"):
        load_toml(path, Outer, table="other")


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "a"\n[inner]\ncount = = 3\n')
    with pytest.raises(ConfigError, match=rf"^{path}: is not valid TOML: .*line 3"):
        load_toml(path, Outer)
    with pytest.raises(ConfigError, match=r"missing\.toml: does not exist"):
        load_toml(tmp_path / "missing.toml", Outer)


def test_messages_are_one_line():
    err = ConfigError("first\n  second", key="k", table="t", file="f.toml")
    assert str(err) == "f.toml [t] k: first second"


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_inner = st.builds(
    Inner,
    count=st.integers(1, 10**12),
    share=st.floats(0, 1),
    on=st.booleans(),
    widths=st.lists(st.integers(1, 1000), max_size=4).map(tuple),
)


@given(
    name=_names,
    inner=_inner,
    colour=st.sampled_from(Colour),
    mode=st.sampled_from(["fast", "slow"]),
    limit=st.none() | st.integers(-(2**63), 2**63 - 1),
    tables=st.dictionaries(_names, _inner, max_size=3),
    spec=_names | st.tuples(_names, _names),
)
def test_to_plain_and_toml_round_trip(name, inner, colour, mode, limit, tables, spec):
    built = Outer(name, inner, colour, mode, limit, tables, spec, "/abs/f")
    assert from_mapping(Outer, to_plain(built)) == built
    assert from_mapping(Outer, tomllib.loads(dumps_toml(built))) == built


def test_dumps_toml_escapes_what_toml_must_escape():
    text = 'two\nlines, "quotes", \\ backslash, \t tab, Δ ✓'
    assert tomllib.loads(dumps_toml(Outer(name=text)))["name"] == text


def test_overrides_are_dotted_keys_with_toml_values():
    assert parse_override("inner.count=3") == ("inner.count", 3)
    assert parse_override("inner.on=true") == ("inner.on", True)
    assert parse_override('name="x y"') == ("name", "x y")
    assert parse_override("name=plain") == ("name", "plain")  # not TOML: a bare string
    assert parse_override("inner.widths=[1, 2]") == ("inner.widths", [1, 2])
    with pytest.raises(ConfigError, match=r"table\.key=value"):
        parse_override("novalue")
    sets = overrides(["inner.count=5"], {"inner.count": 2, "limit": None, "mode": "slow"})
    assert sets == {"inner.count": 5, "mode": "slow"}  # --set wins, None flags are not given
    raw = {"name": "a", "inner": {"share": 0.1}}
    assert apply_overrides(raw, sets) == {"name": "a", "inner": {"share": 0.1, "count": 5}, "mode": "slow"}
    assert raw == {"name": "a", "inner": {"share": 0.1}}  # not changed in place


def test_overrides_are_validated_like_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "a"\n')
    assert load_toml(path, Outer, overrides={"inner.count": 4}).inner.count == 4
    with pytest.raises(ConfigError, match=r"\[inner\] on: must be true or false"):
        load_toml(path, Outer, overrides={"inner.on": "off"})
    with pytest.raises(ConfigError, match=r"\[inner\] cont: unknown key; did you mean 'count'"):
        load_toml(path, Outer, overrides={"inner.cont": 4})


def test_relative_paths_resolve_against_the_file_then_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.toml"
    path.write_text('name = "a"\nfile = "../data/x.parquet"\n')
    monkeypatch.chdir(tmp_path / "sub")
    assert load_toml(path, Outer).file == str(tmp_path / "data" / "x.parquet")
    assert load_toml(path, Outer, overrides={"file": "y"}).file == str(tmp_path / "sub" / "y")
    assert Outer(name="a", file="z").file == os.path.join(os.getcwd(), "z")
    assert Outer(name="a", file="none").file == "none"  # a name, not a path
    assert Outer(name="a").file == ""
    reloaded = tmp_path / "elsewhere.toml"
    reloaded.write_text(dumps_toml(load_toml(path, Outer)))
    assert load_toml(reloaded, Outer) == load_toml(path, Outer)  # absolute: the same anywhere


def test_paths_are_resolved_after_the_checks_so_messages_show_the_value_given():
    @config
    class Spec:
        model: str = setting("m.pt", path=True)

        def __post_init__(self) -> None:
            if not self.model.endswith(".pt"):
                raise ConfigError(f"{self.model!r} is not a checkpoint", key="model")

    with pytest.raises(ConfigError, match=r"^model: 'best' is not a checkpoint$"):
        Spec(model="best")
    assert Path(Spec().model).is_absolute()
