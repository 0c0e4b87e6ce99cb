"""The word lists shipped with fmtool (or given by the user) that probes are built from."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Optional

from fmtool.errors import FmtoolError

_SHIPPED = importlib.resources.files("fmtool") / "resources" / "lexicons"


def _read(path: Optional[str], shipped: str, key: str) -> str:
    if path is None:
        return (_SHIPPED / shipped).read_text(encoding="utf-8")
    if not Path(path).is_file():
        raise FmtoolError(f"{key}: {path} not found")
    return Path(path).read_text(encoding="utf-8")


def first_names(path: Optional[str] = None, key: str = "audit") -> dict[str, dict[str, list[str]]]:
    """{gender: {origin: [names]}}; lists at the same origin have the same length."""
    data = json.loads(_read(path, "first_names.json", key))
    return {gender: groups for gender, groups in data.items() if not gender.startswith("_")}


def swap_pairs(path: Optional[str] = None, key: str = "audit") -> dict[str, list[tuple[str, str]]]:
    data = json.loads(_read(path, "swaps.json", key))
    return {attribute: [tuple(pair) for pair in pairs] for attribute, pairs in data.items() if not attribute.startswith("_")}


def ner_templates(path: Optional[str] = None, key: str = "audit") -> list[str]:
    lines = _read(path, "ner_templates.txt", key).splitlines()
    templates = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if t.split().count("{name}") != 1]
    if bad:
        raise FmtoolError(f"{key}: template '{bad[0]}' must contain {{name}} exactly once, as a word of its own")
    return templates
