"""Typed configs: frozen dataclasses built from TOML-like mappings, validated from their type hints.

Every config of the project (world, training and models, experiment, search, served app) is a
class decorated with ``@config``: a frozen dataclass whose fields are checked on construction
against their type hints - a ``bool`` must be a boolean (``"false"`` is not), a ``str`` a string,
an ``int`` an integer and not a bool, a ``float`` a number; enums are given by value, tuples as
lists, nested configs as tables - and against the bounds declared once with ``setting(...)``.
``from_mapping`` builds a config from a mapping (unknown keys are errors naming the nearest
valid key), ``load_toml`` from a file, ``to_plain`` is the inverse of both and ``dumps_toml``
writes it with ``tomli_w``. Every error is a ``ConfigError`` naming the file, table and key.

Paths: a field declared ``setting(path=True)`` holds a file or folder, made absolute when the
config is built: a relative path in a loaded file against the folder of that file, any other
(a default, an override given on a command line, a value from Python) against the working
directory. A config therefore means the same wherever it is run from, and its TOML dump (a run
folder's config.toml) reloads to the same config.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid configuration value, named by file, table and key where known."""

    def __init__(self, message: str, *, key: str | None = None, table: str | None = None, file=None):
        self.message, self.key, self.table, self.file = message, key, table, file
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [str(self.file)] if self.file is not None else []
        if self.table:
            where.append(f"[{self.table}]")
        if self.key:
            where.append(self.key)
        text = f"{' '.join(where)}: {self.message}" if where else self.message
        return re.sub(r"\s*\n\s*", " ", text)  # one line, whatever the message quotes (e.g. a parser's)

    def inside(self, name: str) -> ConfigError:
        """The same error one table further out (``name`` is the field or key it sits in)."""
        if self.key is None and self.table is None:
            return ConfigError(self.message, table=name, file=self.file)
        if self.table is None:
            return ConfigError(self.message, table=name, key=self.key, file=self.file)
        return ConfigError(self.message, table=f"{name}.{self.table}", key=self.key, file=self.file)

    def in_file(self, file: str | Path) -> ConfigError:
        return ConfigError(self.message, table=self.table, key=self.key, file=file)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    path: bool = False,
    keep: Iterable[str] | Callable[[str], bool] = (),
    table: type | None = None,
    omitted_at_default: bool = False,
) -> Any:
    """A config field with bounds (checked on every number of the value, tuples element-wise)
    and, with ``path``, a file path resolved relative to the config file; the words in
    ``keep`` (e.g. "default", "random"; or the values a predicate ``keep(value)`` accepts) are
    names, not paths. A field holding a loose table
    (a dict) of the config ``table`` (e.g. overrides of it, or an inline training config) has
    that table's paths resolved in it. A field ``omitted_at_default`` is left out of
    ``to_plain`` at its default (a setting added later: stored configs and versions from before
    it stay equal)."""
    kept = keep if callable(keep) else frozenset(keep).__contains__
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "path": path, "keep": kept, "table": table}
    metadata["omitted_at_default"] = omitted_at_default
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def config(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose fields are converted and checked on construction
    (before the class's own ``__post_init__``, which holds the cross-field checks)."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                converted = _convert(hints[field.name], value)
                _check_bounds(field, converted)
            except ConfigError as err:
                raise _at(err, field.name) from None
            if converted is not value:
                object.__setattr__(self, field.name, converted)
        if own is not None:
            own(self)
        for field in dataclasses.fields(self):  # after the checks: their messages show the value given
            value = getattr(self, field.name)
            if field.metadata.get("path") and isinstance(value, str):
                object.__setattr__(self, field.name, _resolve(value, os.getcwd(), field.metadata["keep"]))
            elif isinstance(value, Mapping) and field.metadata.get("table") is not None:
                object.__setattr__(
                    self, field.name, resolve_paths(field.metadata["table"], value, os.getcwd())
                )

    cls.__post_init__ = __post_init__
    return dataclasses.dataclass(frozen=True)(cls)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _at(err: ConfigError, name: str) -> ConfigError:
    """An error about a field's own value gets the field as key; one from inside it, a table."""
    if err.key is None and err.table is None and not getattr(err, "_inner", False):
        return ConfigError(err.message, key=name, file=err.file)
    return err.inside(name)


def _inner(err: ConfigError) -> ConfigError:
    err._inner = True  # raised by a nested table: the field is the table, not the key
    return err


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}.get(
            hint.__name__, hint.__name__
        )
    return str(hint).replace("typing.", "")


def _convert(hint: Any, value: Any) -> Any:  # noqa: PLR0911 (one return per kind of type)
    """``value`` as the type ``hint`` (tables to dataclasses, lists to tuples, enum values to
    members), or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for member in args:
            try:
                return _convert(member, value)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1 or (len(args) == 2 and type(None) in args):
            raise next(e for e, a in zip(errors, args, strict=True) if a is not type(None))
        raise ConfigError(f"must be one of {' | '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ConfigError(f"must be one of {list(args)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return value
        raise ConfigError(f"must be empty, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"must be a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"must be a list of {len(items)} values, got {list(value)!r}")
        out = []
        for i, (item_hint, item) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(_convert(item_hint, item))
            except ConfigError as err:
                raise ConfigError(f"entry {i}: {err.message}") from None
        converted = tuple(out)
        return value if isinstance(value, tuple) and converted == value else converted
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a table, got {value!r}")
        if not args:
            return value
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"keys must be strings, got {key!r}")
            try:
                out[key] = _convert(args[1], item)
            except ConfigError as err:
                raise _inner(_at(err, key)) from None
        return value if isinstance(value, dict) and out == value else out
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a table, got {value!r}")
        try:
            return from_mapping(hint, value)
        except ConfigError as err:
            raise _inner(err) from None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"must be one of {[m.value for m in hint]}, got {value!r}") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"must be true or false (a TOML boolean), got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise ConfigError(f"must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"must be a string, got {value!r}")
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise ConfigError(f"must be {_type_name(hint)}, got {value!r}")
    raise TypeError(f"unsupported config type {hint!r}")


def _check_bounds(field: dataclasses.Field, value: Any) -> None:
    bounds = {k: field.metadata.get(k) for k in ("ge", "gt", "le", "lt")}
    if all(b is None for b in bounds.values()):
        return
    numbers = value if isinstance(value, tuple) else (value,)
    for number in numbers:
        if not isinstance(number, int | float):
            continue
        for name, bound in bounds.items():
            if bound is not None and not _OPS[name][1](float(number), float(bound)):
                wanted = " and ".join(f"{_OPS[k][0]} {b}" for k, b in bounds.items() if b is not None)
                raise ConfigError(f"must be {wanted}, got {value!r}")


_OPS = {
    "ge": (">=", float.__ge__),
    "gt": (">", float.__gt__),
    "le": ("<=", float.__le__),
    "lt": ("<", float.__lt__),
}


def unknown_key(key: str, known: Iterable[str]) -> ConfigError:
    """The error for a key that is not a setting, naming the nearest valid key."""
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {known}"
    return ConfigError(f"unknown key; {hint}", key=key)


def from_mapping(cls: type[T], values: Any) -> T:
    """Build the config ``cls`` from a TOML-like mapping: unknown and missing keys and every
    ill-typed or out-of-range value raise ConfigError naming the table path and key."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"must be a table, got {values!r}")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    for key in values:
        if key not in known:
            raise unknown_key(str(key), known)
    for f in fields:
        if (
            f.name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            raise ConfigError("missing (it has no default)", key=f.name)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a plain dataclass's own checks
        raise ConfigError(str(err)) from None


def to_plain(value: Any) -> Any:
    """A config tree as plain dicts, lists, strings, numbers and booleans (for TOML, JSON and
    checkpoints), leaving out None; ``from_mapping(type(x), to_plain(x)) == x``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = {
            f.name: to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get("omitted_at_default") and getattr(value, f.name) == f.default)
        }
        return {k: v for k, v in plain.items() if v is not None}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    return value


def resolve_paths(cls: type, values: Mapping[str, Any], base: str | Path) -> dict[str, Any]:
    """A copy of the (partial) mapping of ``cls`` with the relative paths of its path fields,
    and of its nested configs', made absolute against ``base``."""
    return _map_paths(cls, values, lambda value, keep: _resolve(value, base, keep))


def relative_paths(cls: type, values: Mapping[str, Any], base: str | Path) -> dict[str, Any]:
    """The inverse of ``resolve_paths``: absolute paths of path fields made relative to
    ``base`` (what stays equal when a folder tree moves as a whole)."""

    def relative(value: str, keep: Callable[[str], bool]) -> str:
        if not value or keep(value) or not os.path.isabs(value):
            return value
        return os.path.relpath(value, os.path.abspath(base))

    return _map_paths(cls, values, relative)


def _map_paths(
    cls: type, values: Mapping[str, Any], fn: Callable[[str, Callable[[str], bool]], str]
) -> dict[str, Any]:
    """A copy of the mapping of ``cls`` with ``fn(value, keep)`` applied to every path field,
    recursing into nested configs."""
    out = dict(values)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue
        value, hint = out[f.name], hints[f.name]
        if f.metadata.get("path") and isinstance(value, str):
            out[f.name] = fn(value, f.metadata["keep"])
        elif isinstance(value, Mapping) and f.metadata.get("table") is not None:
            out[f.name] = _map_paths(f.metadata["table"], value, fn)
        elif isinstance(value, Mapping):
            table = _table_type(hint)
            if table is not None:
                out[f.name] = _map_paths(table, value, fn)
            elif typing.get_origin(hint) is dict and (tables := typing.get_args(hint)):
                inner = _table_type(tables[1])
                if inner is not None:
                    out[f.name] = {k: _map_paths(inner, v, fn) for k, v in value.items()}
    return out


def _table_type(hint: Any) -> type | None:
    """The config class of a field holding one table (directly or as ``X | None``)."""
    if dataclasses.is_dataclass(hint):
        return hint
    members = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(members) == 1:
        return _table_type(members[0])
    return None


def _resolve(value: str, base: str | Path, keep: Callable[[str], bool]) -> str:
    if not value or keep(value) or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(os.path.abspath(base), value))


def parse_override(text: str) -> tuple[str, Any]:
    """``"table.key=value"`` (from ``--set``) as (key, value); the value is read as a TOML value
    (``true``, ``3``, ``"x"``, ``[1, 2]``), else taken as a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set takes table.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``values`` with each dotted key of ``overrides`` ("traffic.users") set."""
    out = _deep_copy(values)
    for dotted, value in overrides.items():
        *tables, key = dotted.split(".")
        node = out
        for i, table in enumerate(tables):
            child = node.setdefault(table, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(tables[: i + 1])} is not a table", key=dotted)
            node = child
        node[key] = value
    return out


def _deep_copy(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing file or a syntax error is a ConfigError naming the
    file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("does not exist", file=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", file=path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"is not valid TOML: {err}", file=path) from None


def load_toml(
    path: str | Path,
    cls: type[T],
    table: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    build: Any = None,
) -> T:
    """The config ``cls`` from a TOML file (its ``[table]`` if given): relative paths resolved
    against the file's folder, then ``overrides`` (dotted keys; their paths are relative to the
    working directory) applied. ``build(cls, mapping)`` replaces ``from_mapping`` for configs with a
    custom form. Every error is a ConfigError naming the file."""
    path = Path(path)
    raw = read_toml(path)
    try:
        if table is not None:
            if table not in raw:
                raise ConfigError(f"has no [{table}] table")
            raw = raw[table]
            if not isinstance(raw, dict):
                raise ConfigError("must be a table", key=table)
        values = resolve_paths(cls, raw, path.parent)
        if overrides:
            values = apply_overrides(values, overrides)
        return (build or from_mapping)(cls, values)
    except ConfigError as err:
        if table is not None and err.file is None:
            err = err.inside(table) if (err.key or err.table) else err
        raise (err if err.file is not None else err.in_file(path)) from None


def dumps_toml(value: Any) -> str:
    """A config (or a plain dict) as TOML text that reads back to the same values."""
    plain = to_plain(value)
    if not isinstance(plain, dict):
        raise TypeError(f"only a table can be written as TOML, got {type(value).__name__}")
    return tomli_w.dumps(plain)


def add_set_argument(parser: Any, example: str = "traffic.users=500") -> None:
    """Give an argparse parser the one override flag every CLI shares: ``--set table.key=value``
    (``example``: a setting of that CLI's config)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help=f"override a setting of the config, e.g. --set {example}; the value is read as a TOML "
        'value (true, 3, 0.5, "x", [1, 2]), else as a bare string; repeatable',
    )


def overrides(sets: Iterable[str], flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The overrides of a command line as dotted keys: the convenience ``flags`` (dotted key ->
    value, None = not given), then the ``--set`` pairs (which win)."""
    out = {key: value for key, value in (flags or {}).items() if value is not None}
    out.update(parse_override(text) for text in sets)
    return out
