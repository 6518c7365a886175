"""`golf params show [section]`: every setting's value, default, allowed range or choices and doc, read from
golf/config.py's dataclasses (each field's `_spec` metadata: lo, hi, choices, doc)."""

from __future__ import annotations

import dataclasses
from typing import Any

from golf.config import ConfigError, Params


def _allowed(meta: dict) -> str:
    if meta.get("choices"):
        return " | ".join(str(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        return f"{lo:g} .. {hi:g}"
    if lo is not None:
        return f">= {lo:g}"
    if hi is not None:
        return f"<= {hi:g}"
    return ""


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def describe(params: Params, section: str | None = None, source: str = "params") -> list[dict]:
    """Rows {key, value, default, allowed, doc, type} for one section (e.g. "train"), the top-level scalars
    ("seeds", "runs_dir" by their own name) or everything (section None)."""
    rows: list[dict] = []
    sections = []
    for f in dataclasses.fields(Params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value):
            sections.append(f.name)
            if section in (None, f.name):
                for sf in dataclasses.fields(value):
                    rows.append({"key": f"{f.name}.{sf.name}", "value": getattr(value, sf.name),
                                 "default": _default(sf), "allowed": _allowed(sf.metadata),
                                 "doc": sf.metadata.get("doc", ""), "type": str(sf.type)})
        elif section in (None, f.name):
            rows.append({"key": f.name, "value": value, "default": _default(f), "allowed": _allowed(f.metadata),
                         "doc": f.metadata.get("doc", ""), "type": str(f.type)})
    if not rows:
        raise ConfigError(f"params show {section!r}: no such section in {source}; expected one of "
                          f"{', '.join(sections)} (or seeds, runs_dir)")
    return rows
