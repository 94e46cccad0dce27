"""YAML loading: defaults <- preset <- run file <- command-line ``a.b=value`` overrides."""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from typing import Any, Mapping, Sequence

import yaml

from .schema import ConfigError, Sources, _FieldValueError, build, field_error, to_dict


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last, so a
    repeated section would silently drop the first one's keys)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config error: file {path} does not exist")
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"config error in {path}: not valid YAML: {e}") from None
    if data is None:
        # An empty file would train the 25,000-kimg defaults into ./runs/default: surely not meant.
        raise ConfigError(f"config error in {path}: the file is empty; a config names at least the model and the "
                          f"data (see configs/ for examples)")
    if not isinstance(data, dict):
        raise ConfigError(f"config error in {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """``over`` wins; nested mappings merge key by key."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _field_type(cls: Any, parts: Sequence[str]) -> Any:
    """The dataclass field type at ``parts`` under ``cls`` (None where the path leaves the schema)."""
    tp = cls
    for p in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if p not in hints:
            return None
        tp = hints[p]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
            tp = args[0]
    return tp


def apply_overrides(data: dict, overrides: Sequence[str], sources: Sources, cls: Any = None) -> dict:
    """Apply ``a.b=value`` strings; the value is parsed as YAML (``1e-3``, ``[1, 2]``, ``null``).
    A section written in its shorthand (``metrics: [fid10k]``) is expanded before a dotted
    override goes into it; any other non-mapping in the way is an error, not silently replaced."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config error in command-line override '{item}': expected key=value, e.g. train.batch_size=32")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"config error in command-line override '{item}': bad key '{key}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            existing = node.get(p)
            if existing is None:
                node[p] = {}
            elif not isinstance(existing, dict):
                tp = _field_type(cls, parts[:i + 1]) if cls is not None else None
                short = tp._shorthand(existing) if hasattr(tp, "_shorthand") else existing
                if not isinstance(short, Mapping):
                    where = ".".join(parts[:i + 1])
                    raise ConfigError(f"config error in command-line override '{item}': '{where}' is {existing!r} "
                                      f"(from {sources.of(where)}), not a mapping of keys")
                node[p] = dict(short)
            node = node[p]
        node[parts[-1]] = value
        sources.by_key[key] = f"command-line override '{item}'"
    return data


def load_config(path: str | None, overrides: Sequence[str], cls: type) -> Any:
    """Load ``cls`` from a YAML file plus overrides. ``cls._preset_data(data)``, when defined,
    returns a preset's values, which sit between the defaults and the file; it reports a bad
    value with ``require`` like any field check."""
    sources = Sources(path or "<defaults>")
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides, sources, cls)
    if hasattr(cls, "_preset_data"):
        try:
            preset = cls._preset_data(data)
        except _FieldValueError as e:
            raise field_error(sources, e) from None
        if preset:
            data = deep_merge(preset, data)
    return build(cls, data, sources=sources)


def dump_yaml(cfg: Any, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
