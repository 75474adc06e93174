"""Typed configuration: YAML file + ``key=value`` overrides -> nested dataclasses.

Every config in tympan is a dataclass whose defaults are the paper's values and whose
``__post_init__`` validates with :func:`check`. :func:`build` turns a plain mapping (from YAML)
and dotted overrides (``optim.lr=3e-4``) into such a dataclass, coercing strings to the
annotated types, and refuses unknown keys and impossible values with a :class:`ConfigError`
that names the full dotted key. Nothing here touches Ray, so a bad config is refused before
any cluster resource is taken.

This module is a leaf: every layer (datasets, methods, distributed, tuning) may import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or holds an impossible value."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"config key '{key}' = {value!r}: {reason}")


def check(condition: bool, key: str, value: Any, reason: str) -> None:
    """Raise ConfigError(key, value, reason) unless ``condition`` holds (use in __post_init__)."""
    if not condition:
        raise ConfigError(key, value, reason)


def _prefix(err: ConfigError, prefix: str) -> ConfigError:
    out = ConfigError(f"{prefix}.{err.key}" if prefix else err.key, err.value, err.reason)
    return out


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Coerce ``value`` (from YAML or an override string) to annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e.reason)
        raise ConfigError(key, value, "; ".join(errors) or f"expected {tp}")
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ConfigError(key, value, f"must be one of {list(choices)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, f"expected a mapping for {tp.__name__}")
        return build(tp, value, _prefix_key=key)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [
                v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, "expected a list")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(key, value, f"expected {len(args)} items")
            return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "expected a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(key, value, "expected a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(key, value, "expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(key, value, "expected an integer") from None
            if f.is_integer():
                return int(f)
        raise ConfigError(key, value, "expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(key, value, "expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, value, "expected a number") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, value, "expected a string")
    return value


def build(cls: type[T], data: Mapping[str, Any] | None = None, overrides: Sequence[str] = (),
          *, _prefix_key: str = "") -> T:
    """Build dataclass ``cls`` from a mapping plus ``key=value`` overrides (dotted keys nest).

    Unknown keys raise ConfigError naming the dotted key; so do failed validations in the
    dataclasses' ``__post_init__`` (prefixed with the nesting path).
    """
    merged: dict[str, Any] = _deepcopy_mapping(data or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, None, "override must look like key=value")
        k, v = item.split("=", 1)
        _set_dotted(merged, k.strip(), v.strip())
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for k, v in merged.items():
        full = f"{_prefix_key}.{k}" if _prefix_key else k
        if k not in fields:
            raise ConfigError(full, v, f"unknown key for {cls.__name__}; known keys: "
                              f"{', '.join(sorted(fields))}")
        kwargs[k] = _coerce(full, v, hints[k])
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise _prefix(e, _prefix_key) from None


def _deepcopy_mapping(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy_mapping(v) if isinstance(v, Mapping) else v for k, v in m.items()}


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            d[p] = nxt
        d = nxt
    d[parts[-1]] = value


def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config", str(p), "file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError("config", str(p), f"invalid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError("config", str(p), "top level must be a mapping")
        data = dict(loaded or {})
    return build(cls, data, overrides)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain nested dict (for checkpoints and YAML)."""
    return dataclasses.asdict(cfg)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b": v}`` (MLflow params must be flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
