"""The configuration reference, generated from the schema: every key, its type, default and
the comment written beside the field. docs/configuration.md is this output; a test keeps
the two equal."""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def field_docs(cls: type) -> dict[str, str]:
    """Trailing comments of a dataclass's field lines: ``x: int = 3  # what x is``."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in map(_FIELD.match, src.splitlines()) if m}


def _type_str(tp: Any) -> str:
    s = str(tp).replace("typing.", "")
    if isinstance(tp, type) and not typing.get_args(tp):
        s = tp.__name__
    return s.replace("NoneType", "None")


def _default_str(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
        if dataclasses.is_dataclass(v):
            return ""
    else:
        return "(required)"
    return "null" if v is None else ("true" if v is True else "false" if v is False else repr(v).replace("'", ""))


def _section(cls: type, prefix: str, out: list[str], skip: set[str]) -> None:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((f.name, tp))
            continue
        key = f"{prefix}{f.name}"
        doc = docs.get(f.name, "").replace("|", "\\|")
        type_cell = _type_str(tp).replace("|", "\\|")
        rows.append(f"| `{key}` | `{type_cell}` | `{_default_str(f)}` | {doc} |")
    if rows:
        out += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for name, tp in nested:
        out += [f"### `{prefix}{name}`", ""]
        _section(tp, f"{prefix}{name}.", out, set())


def reference_markdown(root: type, family_sections: dict[str, dict[str, type]]) -> str:
    """``family_sections``: family name -> {section key: Config class} for the sections whose
    schema depends on ``model``."""
    dynamic = {k for sections in family_sections.values() for k in sections}
    out = ["# Configuration reference", "",
           "Generated from the schema by `bigtrain config --reference`; a test keeps this file equal to",
           "that output. Values are layered: defaults <- the family's defaults and `preset` <- the YAML",
           "file <- command-line `key.sub=value` overrides. Unknown keys, wrong types and bad values",
           "are errors that name the key, the value and the file (or override) it came from.", "",
           "## Top level", ""]
    _section(root, "", out, dynamic)
    for family, sections in sorted(family_sections.items()):
        for key, cls in sections.items():
            out += [f"## `{key}` (model: {family})", ""]
            _section(cls, f"{key}.", out, set())
    return "\n".join(out).rstrip() + "\n"
