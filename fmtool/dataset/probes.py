"""The audit probes (bias test sets) by name: public data sets fmtool does not carry, installed once by the user
from a copy they obtained (`fmtool data install NAME PATH`), checked against the published files' sha256.

configs/ point at a probe as `${probe:<name>}`, which resolves to its file (or folder) under <data home>/probes/<name>/.
The data home is $FMTOOL_DATA_HOME, else $XDG_DATA_HOME/fmtool, else ~/.local/share/fmtool. A probe whose audit
can skip it (`skippable`) resolves even when missing, and that audit says what it skipped; the others fail the
config with where to get them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fmtool.errors import FmtoolError


@dataclass(frozen=True)
class Probe:
    name: str
    description: str
    licence: str
    source: str
    sha256: dict[str, str]  # file name -> digest of the published file
    skippable: bool  # its audit skips the check without it (stereotype), instead of failing (fairness_eec)
    folder: bool = False  # the config points at the folder of files (WinoBias), not at the one file

    def location(self) -> Path:
        root = data_home() / "probes" / self.name
        return root if self.folder else root / next(iter(self.sha256))


PROBES = {
    probe.name: probe
    for probe in (
        Probe(
            "crows_pairs",
            "CrowS-Pairs: 1,508 sentence pairs, stereotype vs anti-stereotype (stereotype audit)",
            "CC BY-SA 4.0 (evaluation only)",
            "https://github.com/nyu-mll/crows-pairs/blob/master/data/crows_pairs_anonymized.csv",
            {"crows_pairs_anonymized.csv": "dfb36986ce0502abbaf7055b9176da3d08d48e07df1251991b5dfbcbceab9d0c"},
            skippable=True,
        ),
        Probe(
            "winobias",
            "WinoBias: pro- and anti-stereotyped coreference sentences, dev and test (stereotype audit)",
            "MIT",
            "https://github.com/uclanlp/corefBias/tree/master/WinoBias/wino/data",
            {
                f"{kind}_stereotyped_type{t}.txt.{split}": digest
                for (kind, t, split), digest in {
                    ("anti", 1, "dev"): "a4e0ebae344e78b56f657a42e8ae684b9db7747d177c5e7149c0907ebb7f3bf6",
                    ("anti", 1, "test"): "331db5bd74bfefebf146a60b67645152a4a1991570d2a56f57154103ac361dd2",
                    ("anti", 2, "dev"): "763ad829ad724f9a85ead689ba8ca69072020cb1238def6210f0fc6a47b97e59",
                    ("anti", 2, "test"): "336571ac1ea8c06cd2aba8e5dd2bd98e00acc0c48da3e4ec5ec7e54eb2633a8f",
                    ("pro", 1, "dev"): "dd55a0d220fe4c0ceb63dd4648223fb4fe1a58d5ad95c116a002ad24b0e292a5",
                    ("pro", 1, "test"): "db7838907238a758eeb5779e48f38c013b892910d6fe864456c59f04245c6689",
                    ("pro", 2, "dev"): "8f0250de723cea9328e3eaf7169e07936f01aa5909ce7aa580db66eb803f4e86",
                    ("pro", 2, "test"): "ea1c1fd94fa612e3cc44d7fa3cc4cb76021bb63fdf94f9826f430051e9052438",
                }.items()
            },
            skippable=True,
            folder=True,
        ),
        Probe(
            "eec",
            "Equity Evaluation Corpus: 8,640 template sentences by gender and race (fairness_eec audit)",
            "none stated (the authors distribute it for research)",
            "https://saifmohammad.com/WebPages/Biases-SA.html",
            {"Equity-Evaluation-Corpus.csv": "d90ff4e56e46475c12d0bb89c2f7bb3e3d23ef36d0fb64e1fb371157c80a45c3"},
            skippable=False,
        ),
    )
}


def data_home() -> Path:
    if os.environ.get("FMTOOL_DATA_HOME"):
        return Path(os.environ["FMTOOL_DATA_HOME"])
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "fmtool"


def get(name: str) -> Probe:
    if name not in PROBES:
        raise FmtoolError(f"probe '{name}': unknown; probes: {', '.join(PROBES)}")
    return PROBES[name]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def problem(probe: Probe) -> Optional[str]:
    """Why the probe cannot be read where fmtool looks for it; None when every file is there and intact."""
    root = probe.location() if probe.folder else probe.location().parent
    for file_name, expected in probe.sha256.items():
        path = root / file_name
        if not path.is_file():
            return (
                f"probe '{probe.name}' is not installed: get {file_name} from {probe.source}, then run "
                f"`fmtool data install {probe.name} PATH`"
            )
        if sha256(path) != expected:
            return f"probe '{probe.name}': {path} does not match the published file (sha256 {expected[:12]}...)"
    return None


def resolve(name: str) -> str:
    """`${probe:<name>}` in configs: the probe's path; one its audit cannot skip fails, saying how to get it, when it
    is missing or altered."""
    probe = get(name)
    missing = None if probe.skippable else problem(probe)
    if missing:
        raise FmtoolError(missing)
    return str(probe.location())


def install(name: str, source: Path) -> Path:
    """Copy the user's copy of a probe (its file, or a folder holding its files) into the data home after checking
    every file's sha256; returns where it now lives."""
    probe = get(name)
    files = {}
    for file_name, expected in probe.sha256.items():
        path = source / file_name if source.is_dir() else source
        if not path.is_file():
            raise FmtoolError(f"data install {name}: {path} not found")
        actual = sha256(path)
        if actual != expected:
            raise FmtoolError(
                f"data install {name}: {path} has sha256 {actual}, not the published {expected}; refusing a "
                "different file"
            )
        files[file_name] = path
    target = data_home() / "probes" / name
    partial = target.with_name(f"{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file_name, path in files.items():
        shutil.copyfile(path, partial / file_name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return probe.location()
