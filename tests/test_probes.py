"""Audit probes: installed from the user's copy only when its sha256 matches, found by configs through ${probe:...};
a missing probe fails the config unless its audit can skip it; a built wheel installed in a fresh environment runs
the probe audits from an unrelated folder."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from fmtool.config import to_typed
from fmtool.configure import compose_train_config
from fmtool.dataset import probes
from fmtool.errors import FmtoolError
from tests.conftest import OVERFIT, REPO, train_tiny

SHARED = REPO.parent / "shared" / "data"
EEC = SHARED / "eec" / "Equity-Evaluation-Corpus.csv"
CROWS, WINOBIAS = SHARED / "crows_pairs" / "crows_pairs_anonymized.csv", SHARED / "winobias"
needs_eec = pytest.mark.skipif(not EEC.is_file(), reason="the EEC corpus is not beside the repository")
needs_stereotype_probes = pytest.mark.skipif(
    not CROWS.is_file() or not WINOBIAS.is_dir(), reason="CrowS-Pairs / WinoBias are not beside the repository"
)


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FMTOOL_DATA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@needs_stereotype_probes
def test_installed_stereotype_probes_are_found_and_missing_ones_leave_the_config_composable(data_home):
    missing = to_typed(compose_train_config(["+task=mlm", "audit=[stereotype]"]))
    assert not Path(missing.audit["stereotype"]["crows_pairs"]).exists(), "a skippable probe resolves even when absent"
    probes.install("crows_pairs", CROWS)
    probes.install("winobias", WINOBIAS)
    assert all(probes.problem(p) is None for p in (probes.get("crows_pairs"), probes.get("winobias")))
    cfg = to_typed(compose_train_config(["+task=mlm", "audit=[stereotype]"]))
    assert (
        Path(cfg.audit["stereotype"]["crows_pairs"]).read_bytes() == CROWS.read_bytes()
        and Path(cfg.audit["stereotype"]["winobias"]).is_dir()
    )


def test_a_probe_not_installed_fails_the_config_saying_how_to_get_it(data_home):
    with pytest.raises(
        FmtoolError,
        match=(
            r"^config: probe 'eec' is not installed: run `fmtool data download eec` \(or get "
            r"Equity-Evaluation-Corpus.csv from https://\S+ and run `fmtool data install eec PATH`\)"
        ),
    ):
        to_typed(compose_train_config(["+task=classification", "audit=[fairness_eec]"]))


def test_re_auditing_with_a_probe_not_installed_fails_the_same_way(data_home):
    from fmtool.commands import audit_config

    # fmtool audit RUN audit=[fairness_eec] resolves the families' configs itself, outside to_typed
    with pytest.raises(FmtoolError, match=r"^config: probe 'eec' is not installed: run `fmtool data download eec`"):
        audit_config({}, "classification", ["audit=[fairness_eec]"])
    with pytest.raises(FmtoolError, match=r"^config: probe 'eec' is not installed"):
        audit_config({"fairness": {"data": "${probe:eec}"}}, "classification", ["audit.fairness.min_group_size=5"])


def test_install_refuses_a_file_that_is_not_the_published_one(data_home, tmp_path):
    impostor = tmp_path / "Equity-Evaluation-Corpus.csv"
    impostor.write_text("ID,Sentence\n1,hello\n")
    with pytest.raises(FmtoolError, match=r"data install eec: .* has sha256 \w+, not the published d90ff4e5"):
        probes.install("eec", impostor)
    assert not (data_home / "probes" / "eec").exists()


@needs_eec
def test_an_installed_probe_is_found_by_configs_and_a_changed_copy_is_reported(data_home):
    location = probes.install("eec", EEC.parent)
    cfg = to_typed(compose_train_config(["+task=classification", "audit=[fairness_eec]"]))
    assert cfg.audit["fairness"]["data"] == str(location) and location.read_bytes() == EEC.read_bytes()
    location.write_text("tampered\n")
    assert "does not match the published file" in probes.problem(probes.get("eec"))


@pytest.mark.slow  # a CLI subprocess
def test_data_command_lists_every_probe_and_exits_2_on_a_bad_install(tmp_path):
    env = {"FMTOOL_DATA_HOME": str(tmp_path)}
    listing = subprocess.run(
        [sys.executable, "-m", "fmtool", "data"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "COLUMNS": "200"},
    )
    assert listing.returncode == 0 and all(name in listing.stdout for name in probes.PROBES)
    assert "fmtool data install eec PATH" in listing.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fmtool", "data", "install", "eec", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"fmtool: error: data install eec: {tmp_path / 'nope.csv'} not found"
    )


@pytest.mark.slow
def test_a_built_wheel_runs_the_probe_audits_from_an_unrelated_folder(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    wheel_dir = work / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("fmtool-*.whl")
    fresh = work / "env"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    # the dependencies come from this environment's site-packages (a plain path: its editable fmtool stays out)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(fresh_site, "deps.pth").write_text(site + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True
    )

    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "FMTOOL_DATA_HOME": str(work / "home"), "PYTHONPATH": ""}

    def fmtool(*args):
        return subprocess.run(
            [str(fresh / "bin" / "fmtool"), *args], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600
        )

    where = subprocess.run(
        [str(python), "-c", "import fmtool; print(fmtool.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    assert where.stdout.startswith(str(fresh)), where.stdout + where.stderr
    if CROWS.is_file() and WINOBIAS.is_dir():
        assert fmtool("data", "install", "crows_pairs", str(CROWS)).returncode == 0
        assert fmtool("data", "install", "winobias", str(WINOBIAS)).returncode == 0
        mlm, _ = train_tiny(work / "mlm", "mlm")
        stereotype = fmtool("audit", str(mlm.path), "audit=[stereotype]", "audit.stereotype.max_pairs=20")
        assert stereotype.returncode == 0, stereotype.stderr
        report = (mlm.path / "report" / "report.md").read_text()
        assert "crows_pairs.stereotype_score" in report and "winobias.pro_stereotype_preference" in report
    if EEC.is_file():
        classifier, _ = train_tiny(work / "cls", "classification", *OVERFIT["classification"])
        assert fmtool("data", "install", "eec", str(EEC)).returncode == 0
        fairness = fmtool(
            "audit",
            str(classifier.path),
            "audit=[fairness_eec]",
            "audit.fairness.max_examples=200",
            "audit.fairness.n_boot=0",
        )
        assert fairness.returncode == 0, fairness.stderr
        assert "Gender" in (classifier.path / "report" / "report.md").read_text()
