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


def protected_groups(swaps: Optional[str] = None, names_file: Optional[str] = None, key: str = "audit") -> dict[str, set[str]]:
    """group name -> its lower-case terms: both sides of the gender pairs, first names, nationalities, religions."""
    pairs = swap_pairs(swaps, f"{key}.swaps")
    groups: dict[str, set[str]] = {"gender:male": {a for a, _ in pairs.get("gender", [])}, "gender:female": {b for _, b in pairs.get("gender", [])}}
    groups["gender:female"] -= groups["gender:male"]
    for attribute in ("nationality", "religion"):
        for term in sorted({t for pair in pairs.get(attribute, []) for t in pair}):
            groups[f"{attribute}:{term}"] = {term}
    for gender, origins in first_names(names_file, f"{key}.first_names").items():
        groups[f"first_name:{gender}"] = {n.lower() for listed in origins.values() for n in listed}
        for origin, listed in origins.items():
            groups.setdefault(f"first_name_origin:{origin}", set()).update(n.lower() for n in listed)
    return groups
