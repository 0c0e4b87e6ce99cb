"""The word lists shipped with fmtool (or given by the user) that probes are built from."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any, Callable, Optional

from fmtool.dataset.readers import read_json, text_lines
from fmtool.errors import FmtoolError

_SHIPPED = importlib.resources.files("fmtool") / "resources" / "lexicons"


def _read(path: Optional[str], shipped: str, key: str) -> str:
    if path is None:
        return (_SHIPPED / shipped).read_text(encoding="utf-8")
    if not Path(path).is_file():
        raise FmtoolError(f"{key}: {path} not found")
    return "".join(line for _, line in text_lines(Path(path)))


def _json(path: Optional[str], shipped: str, key: str, shape: str, fits: Callable[[Any], bool]) -> dict[str, Any]:
    """A JSON lexicon whose entries (keys starting with "_" are comments) each pass `fits`, described by `shape`."""
    if path is None:
        data = json.loads((_SHIPPED / shipped).read_text(encoding="utf-8"))
    elif not Path(path).is_file():
        raise FmtoolError(f"{key}: {path} not found")
    else:
        try:
            data = read_json(Path(path))
        except FmtoolError as error:
            raise FmtoolError(f"{key}: {error}") from None
    entries = (
        {name: value for name, value in data.items() if not name.startswith("_")} if isinstance(data, dict) else None
    )
    if entries is None or not all(fits(value) for value in entries.values()):
        raise FmtoolError(f"{key}: {path} must hold a JSON object of {shape}")
    return entries


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def first_names(path: Optional[str] = None, key: str = "audit") -> dict[str, dict[str, list[str]]]:
    """{gender: {origin: [names]}}; lists at the same origin have the same length."""
    return _json(
        path,
        "first_names.json",
        key,
        "genders, each an object of origins, each a list of names",
        lambda origins: isinstance(origins, dict) and all(map(_strings, origins.values())),
    )


def swap_pairs(path: Optional[str] = None, key: str = "audit") -> dict[str, list[tuple[str, str]]]:
    pairs = _json(
        path,
        "swaps.json",
        key,
        "attributes, each a list of [word, counterpart] pairs",
        lambda pairs: isinstance(pairs, list) and all(_strings(pair) and len(pair) == 2 for pair in pairs),
    )
    return {attribute: [tuple(pair) for pair in listed] for attribute, listed in pairs.items()}


def ner_templates(path: Optional[str] = None, key: str = "audit") -> list[str]:
    lines = _read(path, "ner_templates.txt", key).splitlines()
    templates = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if t.split().count("{name}") != 1]
    if bad:
        raise FmtoolError(f"{key}: template '{bad[0]}' must contain {{name}} exactly once, as a word of its own")
    return templates


def protected_groups(
    swaps: Optional[str] = None, names_file: Optional[str] = None, key: str = "audit"
) -> dict[str, set[str]]:
    """group name -> its lower-case terms: both sides of the gender pairs, first names, nationalities, religions."""
    pairs = swap_pairs(swaps, f"{key}.swaps")
    groups: dict[str, set[str]] = {
        "gender:male": {a for a, _ in pairs.get("gender", [])},
        "gender:female": {b for _, b in pairs.get("gender", [])},
    }
    groups["gender:female"] -= groups["gender:male"]
    for attribute in ("nationality", "religion"):
        for term in sorted({t for pair in pairs.get(attribute, []) for t in pair}):
            groups[f"{attribute}:{term}"] = {term}
    for gender, origins in first_names(names_file, f"{key}.first_names").items():
        groups[f"first_name:{gender}"] = {n.lower() for listed in origins.values() for n in listed}
        for origin, listed in origins.items():
            groups.setdefault(f"first_name_origin:{origin}", set()).update(n.lower() for n in listed)
    return groups
