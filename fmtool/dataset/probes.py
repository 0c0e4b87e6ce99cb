"""The audit probes (bias test sets) by name: public data sets fmtool does not carry, fetched from their authors'
published location (`fmtool data download NAME`, or a mirror laid out as <mirror>/<probe name>/<file name>) or
installed from a copy the user obtained (`fmtool data install NAME PATH`), checked against the published files'
sha256 either way, and written into the data home only when every file of the probe is verified.

configs/ point at a probe as `${probe:<name>}`, which resolves to its file (or folder) under <data home>/probes/<name>/.
The data home is $FMTOOL_DATA_HOME, else $XDG_DATA_HOME/fmtool, else ~/.local/share/fmtool. A probe whose audit
can skip it (`skippable`) resolves even when missing, and that audit says what it skipped; the others fail the
config with where to get them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

from fmtool.errors import FmtoolError, one_line


@dataclass(frozen=True)
class Download:
    """Where a probe file is published: a URL, or the member of the zip archive at that URL."""

    url: str
    member: Optional[str] = None


@dataclass(frozen=True)
class Probe:
    name: str
    description: str
    licence: str
    source: str
    sha256: dict[str, str]  # file name -> digest of the published file
    skippable: bool  # its audit skips the check without it (stereotype), instead of failing (fairness_eec)
    downloads: dict[str, Download]  # file name -> where its authors publish it
    folder: bool = False  # the config points at the folder of files (WinoBias), not at the one file

    def location(self) -> Path:
        root = data_home() / "probes" / self.name
        return root if self.folder else root / next(iter(self.sha256))


_CROWS_PAIRS = "https://raw.githubusercontent.com/nyu-mll/crows-pairs/master/data"
_WINOBIAS = "https://raw.githubusercontent.com/uclanlp/corefBias/master/WinoBias/wino/data"
# a mirror standing in for the published locations, as <mirror>/<probe name>/<file name>
MIRROR_VARIABLE = "FMTOOL_PROBE_MIRROR"
_CHUNK = 1 << 16
_UNREACHABLE = (
    "data download {name}: cannot fetch {url} ({reason}); without network, get the file elsewhere and run "
    "`fmtool data install {name} PATH`"
)
_MISMATCH = (
    "data download {name}: {url} gave a file with sha256 {actual}, not the published {expected}; the probe was not "
    "installed"
)

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
            downloads={"crows_pairs_anonymized.csv": Download(f"{_CROWS_PAIRS}/crows_pairs_anonymized.csv")},
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
            downloads={
                f"{kind}_stereotyped_type{t}.txt.{split}": Download(
                    f"{_WINOBIAS}/{kind}_stereotyped_type{t}.txt.{split}"
                )
                for kind in ("anti", "pro")
                for t in (1, 2)
                for split in ("dev", "test")
            },
            folder=True,
        ),
        Probe(
            "eec",
            "Equity Evaluation Corpus: 8,640 template sentences by gender and race (fairness_eec audit)",
            "none stated (the authors distribute it for research)",
            "https://saifmohammad.com/WebPages/Biases-SA.html",
            {"Equity-Evaluation-Corpus.csv": "d90ff4e56e46475c12d0bb89c2f7bb3e3d23ef36d0fb64e1fb371157c80a45c3"},
            skippable=False,
            downloads={
                "Equity-Evaluation-Corpus.csv": Download(
                    "https://saifmohammad.com/WebDocs/EEC/Equity-Evaluation-Corpus.zip",
                    member="Equity-Evaluation-Corpus/Equity-Evaluation-Corpus.csv",
                )
            },
        ),
    )
}


def data_home() -> Path:
    if os.environ.get("FMTOOL_DATA_HOME"):
        home = Path(os.environ["FMTOOL_DATA_HOME"])
        if home.exists() and not home.is_dir():
            raise FmtoolError(f"FMTOOL_DATA_HOME: {home} is a file; name the folder that holds (or will hold) probes")
        return home
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "fmtool"


def shown(url: str) -> str:
    """`url` as messages print it: a password in it is replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def mirror_url(mirror: str, key: str) -> str:
    """A mirror as a URL: http(s):// and file:// as given, a folder on this machine as its file:// URL."""
    if urlsplit(mirror).scheme in ("http", "https", "file"):
        return mirror
    if Path(mirror).expanduser().is_dir():
        return Path(mirror).expanduser().resolve().as_uri()
    raise FmtoolError(
        f"{key}: '{shown(mirror)}' is neither a URL (http://, https://, file://) nor a folder on this machine"
    )


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
                f"probe '{probe.name}' is not installed: run `fmtool data download {probe.name}` (or get {file_name} "
                f"from {probe.source} and run `fmtool data install {probe.name} PATH`)"
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
    with _staging(target) as partial:
        for file_name, path in files.items():
            shutil.copyfile(path, partial / file_name)
        _publish(partial, target)
    return probe.location()


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A folder of this process's own beside `target` (two downloads of one probe at once never share one), removed
    on the way out whatever happens."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield partial
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _publish(partial: Path, target: Path) -> None:
    """Swap the verified folder in, so the data home holds the old probe or the new one, never half of one; the
    swap is locked, as two processes may verify the same probe at once."""
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)


def download(name: str, *, mirror: Optional[str] = None, progress=None, timeout: float = 60.0) -> Path:
    """Fetch a probe's files from their published locations (or `mirror`), check each one's sha256, and install the
    probe when all of them match; `progress` (start/advance/stop, as trainer.loop.Progress) shows the bytes."""
    probe = get(name)
    if mirror:
        mirror = mirror_url(mirror, "--mirror")
    elif os.environ.get(MIRROR_VARIABLE):
        mirror = mirror_url(os.environ[MIRROR_VARIABLE], MIRROR_VARIABLE)
    target = data_home() / "probes" / name
    with _staging(target) as partial:
        for file_name, expected in probe.sha256.items():
            source = probe.downloads[file_name]
            url = f"{mirror.rstrip('/')}/{name}/{file_name}" if mirror else source.url
            fetched = partial / f"{file_name}.download"
            _fetch(name, url, fetched, progress, timeout)
            if source.member is not None and not mirror:
                _extract(name, url, fetched, source.member, partial / file_name)
            else:
                os.replace(fetched, partial / file_name)
            actual = sha256(partial / file_name)
            if actual != expected:
                raise FmtoolError(_MISMATCH.format(name=name, url=shown(url), actual=actual, expected=expected))
        _publish(partial, target)
    return probe.location()


def _fetch(name: str, url: str, path: Path, progress, timeout: float) -> None:
    """`url` into `path`, refusing a transfer shorter than its Content-Length."""
    from importlib.metadata import version
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    # some publishers refuse Python's default user agent
    request = Request(url, headers={"User-Agent": f"fmtool/{version('fmtool')}"})
    received, total = 0, None
    try:
        with urlopen(request, timeout=timeout) as response, open(path, "wb") as handle:
            total = int(response.headers["Content-Length"]) if response.headers.get("Content-Length") else None
            if progress is not None:
                progress.start(f"{name}: {path.name.removesuffix('.download')}", total)
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                handle.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress.advance(len(chunk))
    except HTTPError as error:
        raise FmtoolError(_UNREACHABLE.format(name=name, url=shown(url), reason=f"HTTP {error.code}")) from None
    except (URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise FmtoolError(_UNREACHABLE.format(name=name, url=shown(url), reason=reason)) from None
    finally:
        if progress is not None:
            progress.stop()
    if total is not None and received < total:
        reason = f"the transfer stopped after {received} of {total} bytes"
        raise FmtoolError(_UNREACHABLE.format(name=name, url=shown(url), reason=reason))


def _extract(name: str, url: str, archive: Path, member: str, path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(archive) as folder, folder.open(member) as source, open(path, "wb") as handle:
            shutil.copyfileobj(source, handle)
    except (zipfile.BadZipFile, KeyError) as error:
        raise FmtoolError(
            f"data download {name}: {shown(url)} is not the published archive ({one_line(error)})"
        ) from None
    archive.unlink()
