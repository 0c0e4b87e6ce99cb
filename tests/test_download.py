"""fmtool data download against a loopback HTTP server: a good file is verified and installed; a corrupted one, a
404, a truncated transfer or an unreachable host installs nothing and fails in one line naming the URL and the
install alternative; redirects are followed; a mirror stands in for the published locations."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fmtool.cli import main
from fmtool.dataset import probes
from fmtool.errors import FmtoolError

_CROWS = b"sent_more,sent_less\nThe man was a nurse.,The woman was a nurse.\n"
_WINOBIAS = {name: f"[The nurse] helped {name} .\n".encode() for name in probes.PROBES["winobias"].sha256}
_EEC = (
    b"ID,Sentence,Template,Person,Gender,Race,Emotion,Emotion word\n"
    b"1,Alonzo feels angry.,x,Alonzo,male,African-American,anger,angry\n"
)


def _zipped(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, data)
    return buffer.getvalue()


class _Server:
    """Serves `routes` (path -> bytes); a path under /truncated/ announces more bytes than it sends, and one under
    /moved/ redirects to the rest of the path."""

    def __init__(self, routes: dict[str, bytes]) -> None:
        routes_ = routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.startswith("/moved/"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/moved"))
                    self.end_headers()
                    return
                body = routes_.get(self.path.removeprefix("/truncated"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (100 if self.path.startswith("/truncated/") else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def published(monkeypatch, tmp_path):
    """The three probes published on a loopback server (EEC as a zip, as its authors publish it), with digests of
    these stand-in files, and a scratch data home."""
    monkeypatch.setenv("FMTOOL_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(probes.MIRROR_VARIABLE, raising=False)
    files = {
        "crows_pairs": {"crows_pairs_anonymized.csv": _CROWS},
        "winobias": _WINOBIAS,
        "eec": {"Equity-Evaluation-Corpus.csv": _EEC},
    }
    routes = {f"/{name}/{file}": data for name, entries in files.items() for file, data in entries.items()}
    routes["/published/eec.zip"] = _zipped("Equity-Evaluation-Corpus/Equity-Evaluation-Corpus.csv", _EEC)
    server = _Server(routes)
    patched = {}
    for name, entries in files.items():
        probe = probes.PROBES[name]
        downloads = {file: probes.Download(f"{server.url}/{name}/{file}") for file in entries}
        if name == "eec":
            member = "Equity-Evaluation-Corpus/Equity-Evaluation-Corpus.csv"
            downloads = {"Equity-Evaluation-Corpus.csv": probes.Download(f"{server.url}/published/eec.zip", member)}
        digests = {file: hashlib.sha256(data).hexdigest() for file, data in entries.items()}
        patched[name] = replace(probe, sha256=digests, downloads=downloads)
    monkeypatch.setattr(probes, "PROBES", patched)
    yield server, tmp_path / "home"
    server.close()


def _use(monkeypatch, name: str, **changes) -> None:
    probe = probes.PROBES[name]
    monkeypatch.setitem(probes.PROBES, name, replace(probe, **changes))


def test_download_all_verifies_and_installs_every_probe(published, capsys):
    server, home = published
    assert main(["data", "download", "--all"]) == 0
    assert (home / "probes" / "crows_pairs" / "crows_pairs_anonymized.csv").read_bytes() == _CROWS
    assert (home / "probes" / "eec" / "Equity-Evaluation-Corpus.csv").read_bytes() == _EEC
    assert sorted(p.name for p in (home / "probes" / "winobias").iterdir()) == sorted(_WINOBIAS)
    assert all(probes.problem(p) is None for p in probes.PROBES.values())
    assert not list((home / "probes").glob("*.partial"))


def test_a_corrupted_file_installs_nothing_and_names_the_digests(published, monkeypatch):
    server, home = published
    _use(monkeypatch, "crows_pairs", sha256={"crows_pairs_anonymized.csv": "0" * 64})
    with pytest.raises(
        FmtoolError,
        match=r"^data download crows_pairs: http://127\.0\.0\.1:\d+/crows_pairs/\S+ gave "
        r"a file with sha256 [0-9a-f]{64}, not the published 0{64}; the probe was not installed",
    ):
        probes.download("crows_pairs")
    assert not (home / "probes" / "crows_pairs").exists() and not list((home / "probes").iterdir())


def test_a_missing_file_keeps_the_installed_probe_and_says_how_to_install_by_hand(published, monkeypatch):
    server, home = published
    probes.download("crows_pairs")
    url = f"{server.url}/nowhere.csv"
    _use(monkeypatch, "crows_pairs", downloads={"crows_pairs_anonymized.csv": probes.Download(url)})
    with pytest.raises(FmtoolError) as error:
        probes.download("crows_pairs")
    assert str(error.value) == (
        f"data download crows_pairs: cannot fetch {url} (HTTP 404); without network, get the file elsewhere and run "
        "`fmtool data install crows_pairs PATH`"
    )
    assert (home / "probes" / "crows_pairs" / "crows_pairs_anonymized.csv").read_bytes() == _CROWS


def test_a_truncated_transfer_is_refused(published, monkeypatch):
    server, home = published
    url = f"{server.url}/truncated/crows_pairs/crows_pairs_anonymized.csv"
    _use(monkeypatch, "crows_pairs", downloads={"crows_pairs_anonymized.csv": probes.Download(url)})
    with pytest.raises(
        FmtoolError,
        match=rf"cannot fetch {url} \(the transfer stopped after {len(_CROWS)} of "
        rf"{len(_CROWS) + 100} bytes\)",
    ):
        probes.download("crows_pairs")
    assert not (home / "probes" / "crows_pairs").exists()


def test_a_redirect_is_followed(published, monkeypatch):
    server, home = published
    url = f"{server.url}/moved/crows_pairs/crows_pairs_anonymized.csv"
    _use(monkeypatch, "crows_pairs", downloads={"crows_pairs_anonymized.csv": probes.Download(url)})
    probes.download("crows_pairs")
    assert (home / "probes" / "crows_pairs" / "crows_pairs_anonymized.csv").read_bytes() == _CROWS


def test_a_mirror_stands_in_for_the_published_locations(published, monkeypatch):
    server, home = published
    for name in probes.PROBES:
        files = probes.PROBES[name].downloads
        _use(monkeypatch, name, downloads={f: probes.Download("http://127.0.0.1:9/unreachable") for f in files})
    monkeypatch.setenv(probes.MIRROR_VARIABLE, server.url)
    assert main(["data", "download", "eec"]) == 0
    assert main(["data", "download", "winobias", "--mirror", server.url]) == 0
    assert (home / "probes" / "eec" / "Equity-Evaluation-Corpus.csv").read_bytes() == _EEC
    assert (home / "probes" / "winobias").is_dir()


def test_without_network_the_command_exits_2_in_one_line(published, monkeypatch, capsys):
    url = "http://127.0.0.1:9/crows_pairs_anonymized.csv"
    _use(monkeypatch, "crows_pairs", downloads={"crows_pairs_anonymized.csv": probes.Download(url)})
    assert main(["data", "download", "crows_pairs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "fmtool data install crows_pairs PATH" in err[0]


def test_download_needs_one_probe_or_all(published, capsys):
    assert main(["data", "download"]) == 2
    assert "give one probe, or --all" in capsys.readouterr().err


def test_downloads_of_one_probe_at_once_all_install_it(published):
    server, home = published
    outcomes = []

    def fetch():
        try:
            outcomes.append(probes.download("winobias"))
        except Exception as error:  # the test reports what a thread raised
            outcomes.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(outcome == probes.PROBES["winobias"].location() for outcome in outcomes), outcomes
    assert probes.problem(probes.PROBES["winobias"]) is None
    assert not [p for p in (home / "probes").iterdir() if p.name.endswith(".partial")]


def test_download_all_goes_on_after_a_failing_probe_and_names_each_outcome(published, monkeypatch, capsys):
    server, home = published
    url = "http://127.0.0.1:9/crows_pairs_anonymized.csv"
    _use(monkeypatch, "crows_pairs", downloads={"crows_pairs_anonymized.csv": probes.Download(url)})
    assert main(["data", "download", "--all"]) == 2
    captured = capsys.readouterr()
    assert "crows_pairs: not installed: data download crows_pairs: cannot fetch" in captured.out
    assert "winobias: downloaded, verified and installed" in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        "fmtool: error: data download --all: crows_pairs not installed (above); installed: winobias, eec"
    )
    assert probes.problem(probes.PROBES["eec"]) is None


def test_a_mirror_may_be_a_folder_and_a_bad_one_or_data_home_is_one_line(published, monkeypatch, capsys, tmp_path):
    server, home = published
    for name in probes.PROBES:
        files = probes.PROBES[name].downloads
        _use(monkeypatch, name, downloads={f: probes.Download("http://127.0.0.1:9/unreachable") for f in files})
    folder = tmp_path / "mirror" / "crows_pairs"
    folder.mkdir(parents=True)
    (folder / "crows_pairs_anonymized.csv").write_bytes(_CROWS)
    monkeypatch.setenv(probes.MIRROR_VARIABLE, str(tmp_path / "mirror"))
    assert main(["data", "download", "crows_pairs"]) == 0
    assert probes.problem(probes.PROBES["crows_pairs"]) is None
    capsys.readouterr()
    assert main(["data", "download", "eec", "--mirror", "not a url"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmtool: error: --mirror: 'not a url' is neither a URL (http://, https://, file://) nor")
    assert main(["data", "download", "eec", "--mirror", "http://user:s3cret@127.0.0.1:9/m"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "http://user:***@127.0.0.1:9/m/eec/" in err
    monkeypatch.setenv("FMTOOL_DATA_HOME", str(folder / "crows_pairs_anonymized.csv"))
    assert main(["data", "download", "eec"]) == 2
    assert "FMTOOL_DATA_HOME: " in capsys.readouterr().err
