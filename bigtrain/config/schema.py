"""Typed config schema: plain dataclasses filled from nested dicts, with errors that name
the key, the value and where it came from.

This module imports nothing from bigtrain, so every ``Config`` dataclass can live beside
the class it configures (``StyleGAN2Generator.Config``) and still use ``require``.

Supported field types: bool, int, float, str, ``X | None``, ``Literal[...]``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Any`` and nested dataclasses.
A dataclass may define ``_field_types(data) -> dict[name, type]`` to choose a field's type
from the data itself (how ``generator:`` gets the chosen model family's Config), and a
classmethod ``_shorthand(value)`` to turn a non-mapping value into its mapping
(``metrics: [fid10k]`` for ``metrics: {names: [fid10k]}``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Mapping, Union


class ConfigError(ValueError):
    """A user-facing configuration error; its message names key, value and source."""


class _FieldValueError(ValueError):
    def __init__(self, key: str, value: Any, reason: str):
        super().__init__(reason)
        self.key, self.value, self.reason = key, value, reason


def require(cond: bool, key: str, value: Any, reason: str) -> None:
    """Validation helper for ``__post_init__``: raise a config error about field ``key``."""
    if not cond:
        raise _FieldValueError(key, value, reason)


class Sources:
    """Where each dotted key's value came from (a file or a command-line override)."""

    def __init__(self, default: str):
        self.default = default
        self.by_key: dict[str, str] = {}

    def of(self, key: str) -> str:
        # The most specific recorded source for this key or one of its parents.
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            src = self.by_key.get(".".join(parts[:n]))
            if src:
                return src
        return self.default


def _err(sources: Sources, key: str, msg: str) -> ConfigError:
    return ConfigError(f"config error in {sources.of(key)}: {msg}")


def field_error(sources: Sources, e: "_FieldValueError", prefix: str = "") -> ConfigError:
    """The user-facing error for a failed ``require`` on field ``e.key`` under ``prefix``."""
    k = f"{prefix}.{e.key}" if prefix else e.key
    return _err(sources, k, f"key '{k}': {e.value!r}: {e.reason}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str, sources: Sources) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key, sources)
            except ConfigError:
                pass
        expected = " or ".join(_type_name(a) for a in args)
        raise _err(sources, key, f"key '{key}': expected {expected}, got {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise _err(sources, key, f"key '{key}': {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping) and hasattr(tp, "_shorthand"):
            value = tp._shorthand(value)
        if not isinstance(value, Mapping):
            raise _err(sources, key, f"key '{key}': expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, sources=sources, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _err(sources, key, f"key '{key}': expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _err(sources, key, f"key '{key}': expected {len(args)} items, got {value!r}")
            return tuple(_convert(a, v, f"{key}[{i}]", sources) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]", sources) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _err(sources, key, f"key '{key}': expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, f"{key}.{k}", sources) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _err(sources, key, f"key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _err(sources, key, f"key '{key}': expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise _err(sources, key, f"key '{key}': expected a number, got {value!r}")
        if not math.isfinite(number):  # .inf and .nan are YAML floats; no setting means them
            raise _err(sources, key, f"key '{key}': expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _err(sources, key, f"key '{key}': expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {tp!r} at {key}")  # a schema bug, not user error


def build(cls: type, data: Mapping[str, Any] | None, *, sources: Sources | str = "<defaults>", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and failed
    ``__post_init__`` checks raise ConfigError naming the dotted key and its source."""
    if isinstance(sources, str):
        sources = Sources(sources)
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    if hasattr(cls, "_field_types"):
        try:
            hints.update(cls._field_types(data))
        except _FieldValueError as e:
            raise field_error(sources, e, prefix) from None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            valid = ", ".join(sorted(fields))
            raise _err(sources, dotted, f"unknown key '{dotted}'{hint}; valid keys here: {valid}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if name in data:
            kwargs[name] = _convert(tp, data[name], dotted, sources)
        elif dataclasses.is_dataclass(tp):
            # A section left out of the file gets its defaults (validated like any other).
            kwargs[name] = build(tp, {}, sources=sources, prefix=dotted)
    try:
        return cls(**kwargs)
    except _FieldValueError as e:
        raise field_error(sources, e, prefix) from None
    except TypeError:
        missing = [n for n, f in fields.items() if n not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            k = f"{prefix}.{missing[0]}" if prefix else missing[0]
            raise _err(sources, k, f"required key '{k}' is missing") from None
        raise


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict/list/scalars, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted_key, type, default, doc) for every leaf field; used by the docs test."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, dotted)
        else:
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            yield dotted, tp, default, f.metadata.get("doc", "")
