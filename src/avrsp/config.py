"""Dataclass configs that YAML files and ``key=value`` overrides can change.

Every config in avrsp is a plain dataclass. This module is the one place that turns
untrusted text (a YAML file, a command-line ``key=value``) into such a dataclass,
checking every key and every value's type so that a typo fails before any work starts,
with a message naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, value or file that cannot be used; the message names it."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form.

    Only the annotations our configs use are supported: bool, int, float, str,
    ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]`` and ``X | None``.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], where)
        raise ConfigError(f"{where}: unsupported annotation {tp}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        number = _number(value)
        # bool is an int subclass; `frames=true` is a mistake, not 1. `1e3` and `10.0` are
        # integers as people write them; `10.5` is not.
        if number is None or not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where=where)
    raise ConfigError(f"{where}: unsupported annotation {_type_name(tp)}")


def _number(value: Any) -> int | float | None:
    """``value`` if it is a number (bool is not), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does.

    PyYAML implements YAML 1.1, where a float needs a dot: ``1e-4`` and ``5e-5`` are
    strings there, and a config would reject ``lr: 1e-4``. Quoted values stay strings."""


# A copy of the resolver table: add_implicit_resolver would otherwise append to lists
# that SafeLoader shares, changing how every PyYAML user in the process reads numbers.
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 numbers (``1e-4`` is a float)."""
    return yaml.load(text, Loader=_Loader)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def replace(config: T, overrides: Mapping[str, Any], *, where: str = "config", _prefix: str = "") -> T:
    """Return a copy of ``config`` with ``overrides`` applied, each key and type checked.

    Nested dataclass fields take dotted keys (``optim.lr=1e-4``) or a mapping; errors
    name the full dotted key. The result is validated again if the dataclass defines
    ``validate()``.
    """
    types_ = _field_types(type(config))
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        full = _prefix + key
        if head not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"{where}: unknown key '{full}' (known keys{' of ' + _prefix[:-1] if _prefix else ''}: "
                              f"{known})")
        if rest:
            if not dataclasses.is_dataclass(types_[head]):
                raise ConfigError(f"{where}: '{_prefix}{head}' has no sub-keys (got '{full}')")
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(types_[head]) and isinstance(value, Mapping):
            nested.setdefault(head, {}).update(value)
        else:
            changes[head] = _coerce(value, types_[head], f"{where}: {full}")
    for head, sub in nested.items():
        changes[head] = replace(getattr(config, head), sub, where=where, _prefix=f"{_prefix}{head}.")
    new = dataclasses.replace(config, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return new


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build ``cls`` from a mapping; every field not given keeps its default."""
    return replace(cls(), data, where=where)


def to_dict(config: Any) -> dict[str, Any]:
    """A YAML/JSON-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def parse_overrides(items: Sequence[str], *, where: str = "command line") -> dict[str, Any]:
    """Parse ``["fusion=bilinear", "dims=[64,32,16,8]"]``; values are read as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: expected key=value, got {item!r}")
        try:
            out[key.strip()] = load_yaml(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: cannot read the value of '{key}': {e}") from None
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data
